"""Recursive splitter: chunks of at most `size` characters (default 900) overlapping by up to `overlap` (120).

Boundaries are chosen like LangChain's recursive splitter, strongest first: markdown headings (h1, h2, h3,
h4-h6), paragraphs, lines, sentences, spaces; only a run with no whitespace at all is cut mid-word. Korean
separates words with spaces, so it is never cut inside a word either. Everything works on character spans of
the parsed text, so each chunk knows its exact offsets, its page (PDF) and the heading path above it.

Overlap is added afterwards: each chunk (except at a new heading) starts up to `overlap` characters before
its own span, at a sentence start when there is one, else at a word start.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

from knowledge.parsers.base import ParsedDocument

_HEADING_LEVELS = [r"\n(?=#\s)", r"\n(?=##\s)", r"\n(?=###\s)", r"\n(?=#{4,6}\s)"]
_TEXT_LEVELS = [r"\n[ \t]*\n\s*", r"\n", r"(?<=[.!?。？！])\s+", r"\s+"]
MARKDOWN_LEVELS = [re.compile(p) for p in _HEADING_LEVELS + _TEXT_LEVELS]
TEXT_LEVELS = [re.compile(p) for p in _TEXT_LEVELS]
_HEADING_LINE = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_SENTENCE_END = ".!?。？！"
HEADING_SEPARATOR = " > "


@dataclass
class ChunkDraft:
    ordinal: int
    text: str
    char_start: int
    char_end: int
    page: int | None = None
    heading_path: str = ""
    token_count: int = 0
    embed_text: str = ""  # what the embedding model sees: the text, with its heading path for context


_TOKEN = re.compile(r"[A-Za-z0-9_]+|[\uac00-\ud7a3]+|\S")


def estimate_tokens(text: str) -> int:
    """Offline estimate of LLM tokens: ~4 characters per Latin word piece, ~1 per Hangul syllable, 1 per
    other symbol. Close enough for progress, quotas and billing estimates (providers report real counts)."""
    count = 0
    for match in _TOKEN.finditer(text):
        piece = match.group()
        if piece[0].isascii() and (piece[0].isalnum() or piece[0] == "_"):
            count += max(1, math.ceil(len(piece) / 4))
        elif "\uac00" <= piece[0] <= "\ud7a3":
            count += len(piece)
        else:
            count += 1
    return count


def embedding_input(text: str, heading_path: str, kind: str) -> str:
    if kind == "markdown" and heading_path and not text.lstrip().startswith("#"):
        return f"{heading_path}\n{text}"
    return text


# ------------------------------------------------------------------ spans


def _hard_split(start: int, end: int, budget: int) -> list[tuple[int, int]]:
    return [(s, min(s + budget, end)) for s in range(start, end, budget)]


def _merge(pieces: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for start, end in pieces:
        if current is None:
            current = (start, end)
        elif end - current[0] <= budget:
            current = (current[0], end)
        else:
            out.append(current)
            current = (start, end)
    if current is not None:
        out.append(current)
    return out


def split_spans(text: str, start: int, end: int, levels, budget: int, level: int = 0) -> list[tuple[int, int]]:
    """Contiguous spans covering [start, end), each at most `budget` long, cut at the strongest boundary."""
    if end - start <= budget:
        return [(start, end)]
    cuts: list[int] = []
    used = len(levels)
    for index in range(level, len(levels)):
        cuts = [m.end() for m in levels[index].finditer(text, start, end) if start < m.end() < end]
        if cuts:
            used = index
            break
    if not cuts:
        return _hard_split(start, end, budget)
    bounds = [start, *cuts, end]
    out: list[tuple[int, int]] = []
    run: list[tuple[int, int]] = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        if b - a <= budget:
            run.append((a, b))
        else:
            out += _merge(run, budget)
            run = []
            out += split_spans(text, a, b, levels, budget, used + 1)
    out += _merge(run, budget)
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _overlap_start(text: str, start: int, floor: int, overlap: int) -> int:
    """Where a chunk beginning at `start` should really begin to repeat up to `overlap` characters."""
    lo = max(floor, start - overlap)
    if lo >= start:
        return start
    word_start = None
    for p in range(lo, start):
        if p > 0 and text[p - 1].isspace() and not text[p].isspace():
            q = p - 1
            while q > 0 and text[q].isspace() and text[q] != "\n":
                q -= 1
            if text[q] == "\n" or text[q] in _SENTENCE_END:
                return p
            if word_start is None:
                word_start = p
    return word_start if word_start is not None else start


class _Headings:
    def __init__(self, text: str):
        self.items = [(m.start(), len(m.group(1)), m.group(2).strip()) for m in _HEADING_LINE.finditer(text)]

    def path_at(self, offset: int) -> str:
        stack: list[tuple[int, str]] = []
        for pos, level, title in self.items:
            if pos > offset:
                break
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
        return HEADING_SEPARATOR.join(title for _level, title in stack)[:500]


def _only_headings(text: str) -> bool:
    return all(not line.strip() or _HEADING_LINE.match(line.strip()) for line in text.split("\n"))


# ------------------------------------------------------------------ documents


def chunk_document(parsed: ParsedDocument, *, size: int = 900, overlap: int = 120) -> list[ChunkDraft]:
    size = max(size, 50)
    overlap = max(0, min(overlap, size // 2))
    spans = _table_chunks(parsed, size) if parsed.kind == "table" else _text_chunks(parsed, size, overlap)
    headings = _Headings(parsed.text) if parsed.kind == "markdown" else None
    row_starts = [r.start for r in parsed.rows]
    drafts: list[ChunkDraft] = []
    for start, end, anchor, label in spans:
        body = parsed.text[start:end] if label is None else label
        heading_path = headings.path_at(anchor) if headings else ""
        if parsed.kind == "table":
            heading_path = _rows_label(parsed, row_starts, start, end)
        drafts.append(ChunkDraft(
            ordinal=len(drafts), text=body, char_start=start, char_end=end, page=parsed.page_at(anchor),
            heading_path=heading_path, token_count=estimate_tokens(body),
            embed_text=embedding_input(body, heading_path, parsed.kind),
        ))
    return drafts


def _text_chunks(parsed: ParsedDocument, size: int, overlap: int):
    """(start, end, anchor, None) per chunk; `anchor` is the start before overlap (page and headings)."""
    text = parsed.text
    start, end = _trim(text, 0, len(text))
    if start == end:
        return []
    if end - start <= size:
        return [(start, end, start, None)]
    levels = MARKDOWN_LEVELS if parsed.kind == "markdown" else TEXT_LEVELS
    packed = [_trim(text, a, b) for a, b in split_spans(text, start, end, levels, max(size - overlap, 1))]
    packed = [(a, b) for a, b in packed if b > a]
    heading_starts: list[int] = []
    if parsed.kind == "markdown":
        packed = _attach_headings(text, packed, size)
        heading_starts = [m.start() for m in _HEADING_LINE.finditer(text)]
    out = []
    previous_start = start
    for index, (a, b) in enumerate(packed):
        real_start = a
        if index and overlap and text[a] != "#":
            # Never reach back across a heading: the previous section's tail is noise here.
            floor = previous_start + 1
            if heading_starts:
                floor = max(floor, heading_starts[max(bisect.bisect_right(heading_starts, a) - 1, 0)])
            real_start = _overlap_start(text, a, floor, overlap)
        out.append((real_start, b, a, None))
        previous_start = a
    return out


def _attach_headings(text: str, packed: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """A span holding only headings joins the span after it (or is dropped when that would be too long)."""
    out: list[tuple[int, int]] = []
    pending: int | None = None
    for index, (a, b) in enumerate(packed):
        if pending is not None:
            if b - pending <= size:
                a = pending
            pending = None
        if index < len(packed) - 1 and _only_headings(text[a:b]):
            pending = a
            continue
        out.append((a, b))
    return out


def _table_chunks(parsed: ParsedDocument, size: int):
    """Rows grouped under a repeated header: (first row start, last row end, anchor, chunk text)."""
    text = parsed.text
    header = text[parsed.header[0]:parsed.header[1]] if parsed.header else ""
    room = max(size - len(header) - 1, 50)
    out = []
    group: list = []

    def flush():
        if group:
            body = "\n".join(text[r.start:r.end] for r in group)
            out.append((group[0].start, group[-1].end, group[0].start, f"{header}\n{body}" if header else body))
            group.clear()

    for row in parsed.rows:
        length = row.end - row.start
        if length > room:
            flush()
            for a, b in split_spans(text, row.start, row.end, TEXT_LEVELS, room):
                a, b = _trim(text, a, b)
                if b > a:
                    out.append((a, b, a, f"{header}\n{text[a:b]}" if header else text[a:b]))
            continue
        if group and row.end - group[0].start > room:
            flush()
        group.append(row)
    flush()
    return out


def _rows_label(parsed: ParsedDocument, row_starts: list[int], start: int, end: int) -> str:
    if not parsed.rows:
        return ""
    first = parsed.rows[max(bisect.bisect_right(row_starts, start) - 1, 0)].number
    last = parsed.rows[max(bisect.bisect_left(row_starts, end) - 1, 0)].number
    return f"rows {first}" if first == last else f"rows {first}-{last}"
