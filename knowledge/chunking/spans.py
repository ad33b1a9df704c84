"""Character spans of prose: the recursive split at the strongest boundary, and where an overlap may begin.

Boundaries, strongest first, like LangChain's recursive splitter: paragraphs, lines, sentences, spaces; only a
run with no whitespace at all is cut mid-word. Korean separates words with spaces, so it is never cut inside a
word either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TEXT_LEVELS = [re.compile(p) for p in (r"\n[ \t]*\n\s*", r"\n", r"(?<=[.!?。？！])\s+", r"\s+")]
_SENTENCE_END = ".!?。？！"


@dataclass
class Piece:
    """One chunk before it gets its number: the span it covers in the parsed text, its text (the span itself,
    or rows under a repeated header), and `anchor`, where its own content starts (before any overlap)."""

    start: int
    end: int
    text: str
    anchor: int
    heading_path: str = ""


def _hard_split(start: int, end: int, budget: int) -> list[tuple[int, int]]:
    return [(s, min(s + budget, end)) for s in range(start, end, budget)]


def merge_runs(pieces: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """Consecutive spans joined greedily while the joined span stays within `budget`."""
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


def split_spans(text: str, start: int, end: int, budget: int, level: int = 0) -> list[tuple[int, int]]:
    """Contiguous spans covering [start, end), each at most `budget` long, cut at the strongest boundary."""
    if end - start <= budget:
        return [(start, end)]
    cuts: list[int] = []
    used = len(TEXT_LEVELS)
    for index in range(level, len(TEXT_LEVELS)):
        cuts = [m.end() for m in TEXT_LEVELS[index].finditer(text, start, end) if start < m.end() < end]
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
            out += merge_runs(run, budget)
            run = []
            out += split_spans(text, a, b, budget, used + 1)
    out += merge_runs(run, budget)
    return out


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def trimmed_spans(text: str, start: int, end: int, budget: int) -> list[tuple[int, int]]:
    """split_spans without the whitespace at either end of each span (and without empty spans)."""
    spans = (trim(text, a, b) for a, b in split_spans(text, start, end, budget))
    return [(a, b) for a, b in spans if b > a]


def overlap_start(text: str, start: int, floor: int, overlap: int) -> int:
    """Where a chunk beginning at `start` should really begin to repeat up to `overlap` characters (never
    before `floor`): at a sentence start when there is one, else at a word start."""
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
