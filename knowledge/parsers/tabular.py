"""CSV: rows become chunk groups, each chunk repeating the header line (see knowledge.chunking)."""

from __future__ import annotations

import csv
import io

from django.utils.translation import gettext_noop

from knowledge.parsers.base import ParsedDocument, ParseError, Row
from knowledge.parsers.text import decode_text, normalize_newlines

NO_ROWS = gettext_noop("The CSV file has a header but no rows.")
MALFORMED = gettext_noop("The CSV file could not be read (malformed quoting or delimiters).")
NO_TEXT = gettext_noop("The file contains no text.")

csv.field_size_limit(10 * 1024 * 1024)


def _dialect(sample: str):
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def _render(cells: list[str]) -> str:
    """One row as a single line: cells joined by " | " with inner newlines flattened."""
    return " | ".join(" ".join(cell.split()) for cell in cells)


def parse_csv(data: bytes, *, filename: str = "") -> ParsedDocument:
    decoded = decode_text(data)
    text = normalize_newlines(decoded.text).lstrip("\ufeff")
    if not text.strip():
        raise ParseError(NO_TEXT)
    dialect = _dialect(text[:20000])
    try:
        records = [r for r in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in r)]
    except csv.Error as exc:
        raise ParseError(MALFORMED) from exc
    if not records:
        raise ParseError(NO_TEXT)
    if len(records) == 1:
        raise ParseError(NO_ROWS)
    # Rendered as "a | b | c" lines: chunk offsets refer to this rendering, one line per record.
    lines = [_render(r) for r in records]
    out = "\n".join(lines)
    header = (0, len(lines[0]))
    rows = []
    offset = len(lines[0]) + 1
    for number, line in enumerate(lines[1:], start=1):
        rows.append(Row(number=number, start=offset, end=offset + len(line)))
        offset += len(line) + 1
    return ParsedDocument(text=out, kind="table", header=header, rows=rows, warnings=decoded.warnings())
