"""Word .docx (python-docx): paragraphs and tables in order, heading styles become markdown headings.

A .docx is a zip archive, so the archive is inspected before anything is inflated: too many entries, too much
uncompressed data or absurd compression ratios mean a zip bomb, refused without unpacking it.
"""

from __future__ import annotations

import io
import re
import zipfile

from django.utils.translation import gettext_noop

from knowledge.parsers.base import ParsedDocument, ParseError
from knowledge.parsers.tables import markdown_table, table_cell

NOT_DOCX = gettext_noop("The file is not a valid Word document (.docx).")
ZIP_BOMB = gettext_noop("The Word document expands to an unreasonable size (possible zip bomb); it was not opened.")
NO_TEXT = gettext_noop("The Word document contains no text.")
EMPTY = gettext_noop("The file is empty.")

MAX_ENTRIES = 5000
MAX_UNCOMPRESSED = 300 * 1024 * 1024
MAX_RATIO = 200  # per entry, for entries above RATIO_FLOOR bytes uncompressed
RATIO_FLOOR = 2 * 1024 * 1024

_HEADING = re.compile(r"^(?:heading|제목)\s*(\d)$", re.I)


def check_archive(data: bytes) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ParseError(NOT_DOCX) from exc
    if len(entries) > MAX_ENTRIES:
        raise ParseError(ZIP_BOMB)
    total = 0
    for info in entries:
        total += info.file_size
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ParseError(ZIP_BOMB)
    if total > MAX_UNCOMPRESSED:
        raise ParseError(ZIP_BOMB)
    if "word/document.xml" not in {info.filename for info in entries}:
        raise ParseError(NOT_DOCX)


def _heading_level(paragraph) -> int:
    try:
        name = (paragraph.style.name or "").strip() if paragraph.style is not None else ""
    except Exception:
        return 0
    if name.lower() == "title":
        return 1
    match = _HEADING.match(name)
    return min(int(match.group(1)), 6) if match else 0


def _is_list(paragraph) -> bool:
    try:
        name = (paragraph.style.name or "") if paragraph.style is not None else ""
    except Exception:
        return False
    return name.lower().startswith("list")


def parse_docx(data: bytes, *, filename: str = "") -> ParsedDocument:
    if not data:
        raise ParseError(EMPTY)
    check_archive(data)
    # Parsing libraries load only in the process that parses: every process imports knowledge.parsers (models).
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError/ValueError/PackageNotFoundError on bad packages
        raise ParseError(NOT_DOCX) from exc
    blocks: list[str] = []
    try:
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                rows = []
                for row in item.rows:
                    cells = row.cells
                    # python-docx repeats a merged cell in every column it spans: its text goes in the first,
                    # the others stay empty, so the columns still line up under the header.
                    texts = [table_cell(c.text) if i == 0 or c._tc is not cells[i - 1]._tc else ""
                             for i, c in enumerate(cells)]
                    if any(texts):
                        rows.append(texts)
                if rows:
                    blocks += ["", markdown_table(rows), ""]
                continue
            text = item.text.strip()
            if not text:
                continue
            level = _heading_level(item)
            if level:
                blocks.append(f"\n{'#' * level} {' '.join(text.split())}\n")
            elif _is_list(item):
                blocks.append(f"- {text}")
            else:
                blocks.append(text + "\n")
    except Exception as exc:
        raise ParseError(NOT_DOCX) from exc
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(blocks)).strip()
    if not text:
        raise ParseError(NO_TEXT)
    title = ""
    try:
        title = (document.core_properties.title or "").strip()[:300]
    except Exception:
        title = ""
    if not title:
        first = re.search(r"^#\s+(.+)$", text, re.M)
        title = first.group(1)[:300] if first else ""
    return ParsedDocument(text=text, kind="markdown", title=title)
