"""Degenerate text: input that would make many chunks while carrying almost nothing to search.

Three signs, measured on the parsed text (on evenly spread 64 KB windows of it, so a 50 MB file costs tens of
milliseconds), each one general rather than a rule about a particular file:

  * no word breaks: most of the text sits in runs of more than 100 letters or digits without a space or a
    punctuation mark ("aaaa…", random letters, a DNA string). Scripts written without spaces (Chinese,
    Japanese, Thai) still break at punctuation and marks, and Korean separates words with spaces;
  * repetition: the windows compress more than 20:1 (zlib); ordinary prose, code and tables compress 2-8:1;
  * records of megabytes: in a table most of the text is in rows each needing more than 50 chunks, so a "row"
    is not a record (one row holding a whole file, a wrong delimiter or line break).

A document that would make fewer than INGEST_DEGENERATE_MIN_CHUNKS chunks is never refused this way: small
odd files cost nothing, and refusing them would only get in the way.
"""

from __future__ import annotations

import math
import re
import statistics
import zlib

from django.conf import settings
from django.utils.translation import gettext as _

from knowledge.parsers.base import ParsedDocument

LONG_RUN = 100  # letters/digits in a row without a break
UNBROKEN_SHARE = 0.5
REPETITION_RATIO = 20.0
RECORD_CHUNKS = 50
RECORD_SHARE = 0.5
WINDOW = 65536
WINDOWS = 32

_LONG_RUN = re.compile(rf"\w{{{LONG_RUN + 1},}}")
_SPACE = re.compile(r"\s")


def min_chunks() -> int:
    return settings.INGEST_DEGENERATE_MIN_CHUNKS


def windows(text: str, size: int = WINDOW, count: int = WINDOWS) -> list[str]:
    """Up to `count` slices of `size` characters spread evenly over the text (the whole text when short)."""
    if len(text) <= size * count:
        return [text[i:i + size] for i in range(0, len(text), size)]
    step = (len(text) - size) / (count - 1)
    return [text[int(i * step):int(i * step) + size] for i in range(count)]


def unbroken_share(parts: list[str]) -> float:
    """Share of the non-space characters that are in runs longer than LONG_RUN."""
    visible = sum(len(p) - len(_SPACE.findall(p)) for p in parts)
    long = sum(len(m.group()) for p in parts for m in _LONG_RUN.finditer(p))
    return long / visible if visible else 0.0


def compression_ratio(parts: list[str]) -> float:
    """Median compression ratio of the windows (a median: one repetitive section does not condemn a file)."""
    ratios = []
    for part in parts:
        data = part.encode("utf-8")
        if len(data) >= 4096 or len(parts) == 1:
            ratios.append(len(data) / max(len(zlib.compress(data, 6)), 1))
    return statistics.median(ratios) if ratios else 1.0


def _giant_records(parsed: ParsedDocument, chunk_size: int) -> tuple[float, int]:
    """(share of the table's characters in over-long rows, the longest row's length)."""
    if parsed.kind != "table" or not parsed.rows:
        return 0.0, 0
    limit = RECORD_CHUNKS * chunk_size
    lengths = [row.end - row.start for row in parsed.rows]
    giant = sum(n for n in lengths if n > limit)
    return giant / max(sum(lengths), 1), max(lengths)


def reason(parsed: ParsedDocument, *, chunk_size: int, chunk_overlap: int = 0) -> str | None:
    """Why this text is refused as degenerate, or None when it is fine (or too small to matter)."""
    text = parsed.text
    expected = math.ceil(len(text) / max(chunk_size - chunk_overlap, 1))
    if expected < min_chunks():
        return None
    parts = windows(text)
    if unbroken_share(parts) >= UNBROKEN_SHARE:
        return _(
            "Most of this text has no word breaks (runs of more than %(n)s letters or digits without a space or "
            "punctuation), so it cannot be split into searchable passages. Check that the file really is text."
        ) % {"n": LONG_RUN}
    ratio = compression_ratio(parts)
    if ratio >= REPETITION_RATIO:
        return _(
            "This text is almost entirely repetition (it compresses %(ratio)s:1, ordinary text about 3:1), so it "
            "would make about %(chunks)s nearly identical chunks. Remove the repeated part and upload it again."
        ) % {"ratio": int(ratio), "chunks": f"{expected:,}"}
    share, longest = _giant_records(parsed, chunk_size)
    if share >= RECORD_SHARE:
        return _(
            "This table has rows of up to %(chars)s characters, each of which would be cut into more than %(n)s "
            "chunks; a row should be one record. Check the file's delimiter and line breaks."
        ) % {"chars": f"{longest:,}", "n": RECORD_CHUNKS}
    return None
