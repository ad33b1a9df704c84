"""What every parser returns, and the one error a parser raises for bad input."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


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

    def page_at(self, offset: int) -> int | None:
        if self.page_count is None:
            return None
        return 1 + bisect.bisect_right(self.page_starts, offset)
