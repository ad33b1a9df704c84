"""Rows under a repeated head: how tables (CSV, markdown, HTML, docx) and code blocks are split.

Every piece repeats the head (a table's header row and separator, a code fence's opening line) and, for code,
the closing fence, so a piece read alone still says which column is which, or that it is code.
"""

from __future__ import annotations

from knowledge.chunking.spans import Piece, trimmed_spans

_MIN_ROOM = 50  # a head longer than a chunk still leaves rows this much room (the chunk is then longer)


def grouped_rows(text: str, rows: list[tuple[int, int]], size: int, *, head: str, tail: str = "",
                 lead_start: int | None = None, end: int | None = None) -> list[Piece]:
    """Consecutive rows grouped into pieces of at most `size` characters (a row longer than that is split at
    its strongest boundaries, each part under the head).

    With `lead_start` the first piece is the source verbatim from there (the head itself, and headings just
    above it) and the last runs verbatim to `end` (the closing fence); every other piece is head + rows + tail.
    """
    glue = len(head) + 1 if head else 0
    tail_room = len(tail) + 1 if tail else 0
    pieces: list[Piece] = []
    group: list[tuple[int, int]] = []

    def compose(a: int, b: int, *, last: bool) -> tuple[int, str]:
        if lead_start is not None and not pieces:
            start, body = lead_start, text[lead_start:b]
        else:
            start, body = a, f"{head}\n{text[a:b]}" if head else text[a:b]
        if last and end is not None:
            return start, body + text[b:end]
        return start, f"{body}\n{tail}" if tail else body

    def room() -> int:
        used = rows[0][0] - lead_start if lead_start is not None and not pieces else glue
        return max(size - used - tail_room, _MIN_ROOM)

    def flush(*, last: bool = False) -> None:
        if group:
            start, body = compose(group[0][0], group[-1][1], last=last)
            stop = end if last and end is not None else group[-1][1]
            pieces.append(Piece(start=start, end=stop, text=body, anchor=start))
            group.clear()

    for a, b in rows:
        if b - a > room():
            flush()
            for part_a, part_b in trimmed_spans(text, a, b, max(size - glue - tail_room, _MIN_ROOM)):
                body = text[part_a:part_b]
                body = f"{head}\n{body}" if head else body
                pieces.append(Piece(start=part_a, end=part_b, text=f"{body}\n{tail}" if tail else body,
                                    anchor=part_a))
            continue
        if group and b - group[0][0] > room():
            flush()
        group.append((a, b))
    flush(last=True)
    return pieces
