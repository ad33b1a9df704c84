"""Tables of HTML and Word documents written as markdown (GFM) tables, so the chunker splits them like any
markdown table: between rows, the header row and separator repeated in every chunk."""

from __future__ import annotations

import re

_TABLE_LINE = re.compile(r"\| .* \|")


def table_cell(text: str) -> str:
    """A cell's text on one line, its pipes escaped so they do not split the cell."""
    return " ".join(text.split()).replace("|", "\\|")


def markdown_table(rows: list[list[str]]) -> str:
    """GFM table of `rows` (cells from table_cell); the first row is the header. Every row gets as many cells
    as the widest, so a renderer drops none."""
    width = max(len(row) for row in rows)
    lines = ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


def is_table_line(line: str) -> bool:
    return bool(_TABLE_LINE.fullmatch(line))
