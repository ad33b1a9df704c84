"""Markdown chunks from the document's structure, read by markdown-it-py (the parser chat renders answers with).

The top-level blocks are units, each kept as its source text (token.map gives its lines): headings, code
(fenced or indented), tables, lists (of items) and prose (paragraphs, quotes, HTML). Headings open sections,
so a `#` line inside a code block or a quote is never a heading. A chunk is either a run of whole consecutive
siblings (sections or units) or a piece of one sibling that alone is too big, which is split by its own kind:
a section into its parts, a list between items, a table between rows (the header row and separator repeated in
every piece), code between lines (the fence lines repeated), prose as knowledge.chunking.spans does. A boundary
so never falls inside a table row, a list item or a code block unless that unit alone exceeds the chunk size.

A chunk's heading path is the headings that enclose all of it; overlap repeats the end of the previous chunk
only from prose, never across a heading nor into a table, list or code block.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import cache

from markdown_it import MarkdownIt

from knowledge.chunking.rows import grouped_rows
from knowledge.chunking.spans import Piece, overlap_start, trim, trimmed_spans

HEADING_SEPARATOR = " > "
_ATOMIC = {"code", "table", "list", "item"}  # kept whole when they fit a chunk, even beyond the overlap budget
_CLOSING_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*")


@dataclass
class _Node:
    kind: str  # section, heading, code, table, list, item, prose
    start: int
    end: int
    children: list[_Node] = field(default_factory=list)
    level: int = 0  # headings and sections
    title: str = ""
    lines: tuple[int, int] = (0, 0)  # code and tables: the unit's lines
    fence: str = ""  # fenced code: its opening marks, e.g. ```


@cache
def _parser() -> MarkdownIt:
    # Block structure only: inline parsing (emphasis, links) is most of the cost and changes no boundary.
    return MarkdownIt("commonmark").enable("table").disable(["inline", "text_join"])


class _Lines:
    def __init__(self, text: str):
        self.text = text
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def at(self, line: int) -> int:
        return self.starts[line] if line < len(self.starts) else len(self.text)

    def span(self, first: int, stop: int) -> tuple[int, int]:
        return trim(self.text, self.at(first), self.at(stop))


def _units(text: str, lines: _Lines) -> list[_Node]:
    # A lone "\r" would be a line break to markdown-it but not to the offsets; same length, same lines.
    tokens = _parser().parse(text.replace("\r", " "))
    units: list[_Node] = []
    for index, token in enumerate(tokens):
        if token.map is None:
            continue
        if token.level == 1 and token.type == "list_item_open" and units and units[-1].kind == "list":
            start, end = lines.span(*token.map)
            if end > start:
                units[-1].children.append(_Node("item", start, end))
            continue
        if token.level != 0:
            continue
        start, end = lines.span(*token.map)
        if end <= start:
            continue
        if token.type == "heading_open":
            title = " ".join(tokens[index + 1].content.split())
            units.append(_Node("heading", start, end, level=int(token.tag[1]), title=title))
        elif token.type in ("fence", "code_block"):
            units.append(_Node("code", start, end, lines=tuple(token.map), fence=token.markup))
        elif token.type == "table_open":
            units.append(_Node("table", start, end, lines=tuple(token.map)))
        elif token.type in ("bullet_list_open", "ordered_list_open"):
            units.append(_Node("list", start, end))
        else:
            units.append(_Node("prose", start, end))
    return _with_gaps(text, units)


def _with_gaps(text: str, units: list[_Node]) -> list[_Node]:
    """Text no block claims (link reference definitions, for one) stays in the chunks as prose."""
    out: list[_Node] = []
    position = 0
    for unit in [*units, _Node("end", len(text), len(text))]:
        start, end = trim(text, position, unit.start)
        if end > start:
            out.append(_Node("prose", start, end))
        if unit.kind != "end":
            out.append(unit)
            position = unit.end
    return out


def _sections(units: list[_Node]) -> list[_Node]:
    """Units nested under the headings that open sections: the document's top-level siblings."""
    root = _Node("section", 0, 0)
    stack = [root]
    for unit in units:
        if unit.kind == "heading":
            while stack[-1].level >= unit.level:
                stack.pop()
            section = _Node("section", unit.start, unit.end, children=[unit], level=unit.level, title=unit.title)
            stack[-1].children.append(section)
            stack.append(section)
        else:
            stack[-1].children.append(unit)
        for open_section in stack[1:]:
            open_section.end = unit.end
    return root.children


class _Packer:
    def __init__(self, text: str, lines: _Lines, size: int, budget: int):
        self.text, self.lines, self.size, self.budget = text, lines, size, budget

    def pack(self, nodes: list[_Node]) -> list[Piece]:
        out: list[Piece] = []
        run: list[_Node] = []
        for node in nodes:
            length = node.end - node.start
            if length <= self.budget or (node.kind in _ATOMIC and length <= self.size):
                run.append(node)
                continue
            lead: list[_Node] = []  # headings right above a unit too big to join them: they go with its start
            while run and run[-1].kind == "heading":
                lead.insert(0, run.pop())
            out += self.merge(run)
            run = []
            out += self.split(node, lead)
        return out + self.merge(run)

    def merge(self, run: list[_Node]) -> list[Piece]:
        """Consecutive nodes joined while the joined span fits the budget; headings alone join what follows
        them up to the chunk size (a heading never ends a chunk while there is room for its content)."""
        spans: list[tuple[int, int]] = []
        group_start, group_end, only_headings = None, 0, True
        for node in run:
            if group_start is not None:
                joined = node.end - group_start
                if joined <= self.budget or (only_headings and joined <= self.size):
                    group_end, only_headings = node.end, only_headings and node.kind == "heading"
                    continue
                spans.append((group_start, group_end))
            group_start, group_end, only_headings = node.start, node.end, node.kind == "heading"
        if group_start is not None:
            spans.append((group_start, group_end))
        return [Piece(start=a, end=b, text=self.text[a:b], anchor=a) for a, b in spans]

    def split(self, node: _Node, lead: list[_Node]) -> list[Piece]:
        lead_start = lead[0].start if lead else None
        if node.kind in ("section", "list"):
            return self.pack(lead + node.children)
        if node.kind == "table":
            first, stop = node.lines
            head = self.text[slice(*self.lines.span(first, first + 2))]
            rows = [self.lines.span(line, line + 1) for line in range(first + 2, stop)]
            return self.rows(rows, node, lead_start, head=head)
        if node.kind == "code" and node.fence:  # its opening (and closing) line repeat in every piece
            first, stop = node.lines
            head = self.text[slice(*self.lines.span(first, first + 1))]
            closing = self.text[slice(*self.lines.span(stop - 1, stop))] if stop - first > 1 else ""
            closed = _CLOSING_FENCE.fullmatch(closing) and closing.strip().startswith(node.fence)
            body_stop = stop - 1 if closed else stop
            rows = [self.lines.span(line, line + 1) for line in range(first + 1, body_stop)]
            return self.rows(rows, node, lead_start, head=head, tail=closing.strip() if closed else "", end=node.end)
        if node.kind == "code":  # indented code: between lines
            return self.rows([self.lines.span(line, line + 1) for line in range(*node.lines)], node, lead_start,
                             head="")
        return self.prose(node.start, node.end, lead_start)

    def rows(self, rows: list[tuple[int, int]], node: _Node, lead_start: int | None, **head) -> list[Piece]:
        rows = [(a, b) for a, b in rows if b > a]
        if not rows:  # all head (a header or fence line longer than a chunk)
            return self.prose(node.start, node.end, lead_start)
        return grouped_rows(self.text, rows, self.size, lead_start=node.start if lead_start is None else lead_start,
                            **head)

    def prose(self, start: int, end: int, lead_start: int | None) -> list[Piece]:
        spans = trimmed_spans(self.text, start, end, self.budget)
        if lead_start is not None:
            if spans[0][1] - lead_start <= self.size:
                spans[0] = (lead_start, spans[0][1])
            else:
                spans.insert(0, trim(self.text, lead_start, start))
        return [Piece(start=a, end=b, text=self.text[a:b], anchor=a) for a, b in spans]


def _with_paths(text: str, pieces: list[Piece], headings: list[_Node]) -> None:
    """Each piece's path: the headings above its content (past the headings it opens with), less those that a
    heading further inside it closes."""
    starts = [h.start for h in headings]
    by_start = {h.start: h for h in headings}
    stack: list[_Node] = []
    done = 0
    for piece in pieces:
        content = piece.anchor
        while content in by_start:
            content = trim(text, by_start[content].end, piece.end)[0]
        while done < len(headings) and headings[done].start <= content:
            heading = headings[done]
            while stack and stack[-1].level >= heading.level:
                stack.pop()
            stack.append(heading)
            done += 1
        inside = headings[bisect.bisect_right(starts, content):bisect.bisect_left(starts, piece.end)]
        closes = min((h.level for h in inside), default=7)
        piece.heading_path = HEADING_SEPARATOR.join(h.title for h in stack if h.level < closes)[:500]


def _with_overlap(text: str, pieces: list[Piece], units: list[_Node], size: int, overlap: int) -> None:
    if not overlap:
        return
    heading_starts = [u.start for u in units if u.kind == "heading"]
    blocks = [u for u in units if u.kind in _ATOMIC]
    block_starts = [u.start for u in blocks]
    for before, piece in zip(pieces, pieces[1:], strict=False):
        anchor = piece.anchor
        floor = max(before.anchor + 1, anchor - (size - len(piece.text)))
        at = bisect.bisect_right(heading_starts, anchor) - 1
        if at >= 0:
            if heading_starts[at] == anchor:
                continue  # a chunk opening a section does not begin with the previous one's tail
            floor = max(floor, heading_starts[at])
        at = bisect.bisect_right(block_starts, anchor) - 1
        if at >= 0:
            if blocks[at].start < anchor < blocks[at].end:
                continue  # inside a table, list or code block: rows under a repeated head, or items
            if blocks[at].end <= anchor:
                floor = max(floor, blocks[at].end)
        piece.start = overlap_start(text, anchor, floor, overlap)
        piece.text = text[piece.start:anchor] + piece.text


def markdown_pieces(text: str, size: int, overlap: int) -> list[Piece]:
    lines = _Lines(text)
    units = _units(text, lines)
    if not units:
        return []
    first, last = units[0].start, units[-1].end
    if last - first <= size:
        pieces = [Piece(start=first, end=last, text=text[first:last], anchor=first)]
    else:
        pieces = _Packer(text, lines, size, max(size - overlap, 1)).pack(_sections(units))
        _with_overlap(text, pieces, units, size, overlap)
    _with_paths(text, pieces, [u for u in units if u.kind == "heading"])
    return pieces
