"""Chunks of at most `size` characters (default 900) overlapping by up to `overlap` (120), cut at the strongest
boundary available, each with its exact character offsets, its page (PDF) and the heading path above it.

By the parsed document's kind:
  markdown (.md, and HTML and docx, whose parsers write markdown): from its structure (chunking.markdown);
  text (plain text, PDF): paragraphs, lines, sentences, spaces (chunking.spans);
  table (CSV): rows grouped under the repeated header line (chunking.rows), labelled with their row numbers.

Overlap is added afterwards: a prose chunk (except at a new heading) starts up to `overlap` characters before
its own span, at a sentence start when there is one, else at a word start.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from knowledge.chunking.markdown import HEADING_SEPARATOR, markdown_pieces
from knowledge.chunking.rows import grouped_rows
from knowledge.chunking.spans import Piece, overlap_start, trim, trimmed_spans
from knowledge.parsers.base import ParsedDocument
from llm.tokens import count_tokens

__all__ = ["HEADING_SEPARATOR", "ChunkDraft", "chunk_document", "embedding_input"]


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


def embedding_input(text: str, heading_path: str, kind: str) -> str:
    if kind == "markdown" and heading_path and not text.lstrip().startswith("#"):
        return f"{heading_path}\n{text}"
    return text


def chunk_document(parsed: ParsedDocument, *, size: int = 900, overlap: int = 120) -> list[ChunkDraft]:
    size = max(size, 50)
    overlap = max(0, min(overlap, size // 2))
    if parsed.kind == "markdown":
        pieces = markdown_pieces(parsed.text, size, overlap)
    elif parsed.kind == "table":
        pieces = _table_pieces(parsed, size)
    else:
        pieces = _text_pieces(parsed.text, size, overlap)
    return [
        ChunkDraft(ordinal=ordinal, text=piece.text, char_start=piece.start, char_end=piece.end,
                   page=parsed.page_at(piece.anchor), heading_path=piece.heading_path,
                   token_count=count_tokens(piece.text),
                   embed_text=embedding_input(piece.text, piece.heading_path, parsed.kind))
        for ordinal, piece in enumerate(pieces)
    ]


def _text_pieces(text: str, size: int, overlap: int) -> list[Piece]:
    start, end = trim(text, 0, len(text))
    if start == end:
        return []
    if end - start <= size:
        return [Piece(start=start, end=end, text=text[start:end], anchor=start)]
    pieces = []
    previous = start
    for index, (a, b) in enumerate(trimmed_spans(text, start, end, max(size - overlap, 1))):
        real_start = overlap_start(text, a, previous + 1, overlap) if index and overlap else a
        pieces.append(Piece(start=real_start, end=b, text=text[real_start:b], anchor=a))
        previous = a
    return pieces


def _table_pieces(parsed: ParsedDocument, size: int) -> list[Piece]:
    header = parsed.text[parsed.header[0]:parsed.header[1]] if parsed.header else ""
    pieces = grouped_rows(parsed.text, [(row.start, row.end) for row in parsed.rows], size, head=header)
    if parsed.rows:
        numbers = [row.number for row in parsed.rows]
        starts = [row.start for row in parsed.rows]
        for piece in pieces:
            first = numbers[max(bisect.bisect_right(starts, piece.start) - 1, 0)]
            last = numbers[max(bisect.bisect_left(starts, piece.end) - 1, 0)]
            piece.heading_path = f"rows {first}" if first == last else f"rows {first}-{last}"
    return pieces
