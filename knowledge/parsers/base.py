"""What every parser returns, the one error a parser raises for bad input, and the warnings it may leave."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from django.utils.translation import ngettext

# Warning codes, stored on the document as [{"code": ..., "count": n}] and described in the reader's language.
UNDECODABLE = "undecodable"  # characters that could not be decoded (damaged bytes, U+FFFD marks): left out
REPAIRED = "repaired"  # lines whose mojibake (UTF-8 once read as cp1252/latin-1) was repaired


class ParseError(Exception):
    """The file can't be turned into text. The message is shown to the user as the document's error, so it
    says what is wrong with the file (not with the code) and is kept free of parameters so it translates."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class Row:
    """A CSV data row: its number in the file (1 = first data row) and its span in ParsedDocument.text."""

    number: int
    start: int
    end: int


@dataclass
class ParsedDocument:
    text: str
    # "markdown": headings are lines starting with "#" (md, html, docx); "text": plain; "table": CSV rows.
    kind: str = "text"
    title: str = ""
    page_count: int | None = None
    # Offsets in `text` where page 2, 3... start (PDF). Page 1 starts at 0.
    page_starts: list[int] = field(default_factory=list)
    # CSV: the header line's span and one Row per data row.
    header: tuple[int, int] | None = None
    rows: list[Row] = field(default_factory=list)
    # What reading the file took: [{"code": UNDECODABLE, "count": 12}, ...]
    warnings: list[dict] = field(default_factory=list)

    def page_at(self, offset: int) -> int | None:
        if self.page_count is None:
            return None
        return 1 + bisect.bisect_right(self.page_starts, offset)

    def drop_replacement_marks(self) -> None:
        """Takes U+FFFD marks (characters the file's bytes did not give) out of the text, so that no chunk or
        search term holds one; offsets into the text move with it, and the count becomes a warning."""
        marks = [m.start() for m in re.finditer("\ufffd", self.text)]
        if not marks:
            return

        def moved(offset: int) -> int:
            return offset - bisect.bisect_left(marks, offset)

        self.text = self.text.replace("\ufffd", "")
        self.title = self.title.replace("\ufffd", "")
        self.page_starts = [moved(o) for o in self.page_starts]
        if self.header is not None:
            self.header = (moved(self.header[0]), moved(self.header[1]))
        self.rows = [Row(number=r.number, start=moved(r.start), end=moved(r.end)) for r in self.rows]
        self.warnings = [*self.warnings, {"code": UNDECODABLE, "count": len(marks)}]


def describe_warning(warning: dict) -> str:
    """A stored warning in the active language."""
    count = int(warning.get("count") or 0)
    code = warning.get("code")
    if code == UNDECODABLE:
        return ngettext("%(count)s character could not be decoded and was left out.",
                        "%(count)s characters could not be decoded and were left out.", count) % {"count": count}
    if code == REPAIRED:
        return ngettext("Garbled characters (text read in the wrong encoding) were repaired on %(count)s line.",
                        "Garbled characters (text read in the wrong encoding) were repaired on %(count)s lines.",
                        count) % {"count": count}
    return str(code)
