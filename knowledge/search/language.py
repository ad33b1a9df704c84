"""Which language a query is in, and how much lexical evidence it can have in a KB.

A query is Korean when most of its letters are Hangul, English (any Latin-script text: the analyser's other
branch) when it has letters and most are not, and unknown without letters (numbers, codes). The analyser
(analysis.py) makes the same split per word, so this is the language BM25 sees.

Lexical coverage is the share of a query's weight (each distinct term's idf x its count in the query) carried
by terms that occur in the KB at all; a term the KB never saw counts with the largest idf the KB could give.
A question in the KB's own language scores near 1; a Korean question over English passages keeps only its
numbers and Latin-script names (about .1), which is why it measures "the sides speak different languages"
without knowing the KB's language, and also catches same-language questions whose words the KB lacks.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable

from django.db import DEFAULT_DB_ALIAS

from knowledge.models import Chunk
from knowledge.search.analysis import hangul_ratio

KOREAN, ENGLISH = "ko", "en"


def query_language(text: str) -> str:
    """"ko", "en", or "" when the text has no letters."""
    if not any(ch.isalpha() for ch in text or ""):
        return ""
    return KOREAN if hangul_ratio(text) >= 0.5 else ENGLISH


def text_language(texts: list[str]) -> str:
    """The language of a collection of texts: "ko" when at least half its letters are Hangul (a syllable
    carries what two or three Latin letters do, and Korean writing quotes English terms), "en" when at most a
    tenth are, "" for a mix (or no letters)."""
    letters = [(hangul_ratio(t), sum(ch.isalpha() for ch in t)) for t in texts]
    total = sum(n for _ratio, n in letters)
    if not total:
        return ""
    korean = sum(ratio * n for ratio, n in letters) / total
    return KOREAN if korean >= 0.5 else ENGLISH if korean <= 0.1 else ""


# A KB's content language ("auto" KBs), from a sample of its newest chunks, kept per process for a while.
_SAMPLE_CHUNKS = 64
_CONTENT_TTL_SECONDS = 300.0
_content_cache: dict[tuple[int, ...], tuple[float, str]] = {}
_content_lock = threading.Lock()


def kb_language(*, tenant, kbs, using: str = DEFAULT_DB_ALIAS) -> str:
    """The language the KBs' passages are written in: the KBs' own setting when they all say the same, else
    what a sample of their chunks says ("" for a mix)."""
    stated = {kb.language for kb in kbs}
    if len(stated) == 1 and stated <= {KOREAN, ENGLISH}:
        return stated.pop()
    key = tuple(sorted(kb.pk for kb in kbs))
    now = time.monotonic()
    with _content_lock:
        cached = _content_cache.get(key)
    if cached and now - cached[0] < _CONTENT_TTL_SECONDS:
        return cached[1]
    texts = list(Chunk.objects.using(using).filter(tenant=tenant, kb_id__in=key).order_by("-id")
                 .values_list("text", flat=True)[:_SAMPLE_CHUNKS])
    language = text_language(texts)
    with _content_lock:
        if len(_content_cache) >= 1000:
            _content_cache.clear()
        _content_cache[key] = (now, language)
    return language


def lexical_coverage(terms: Iterable[tuple[int, int]], chunk_count: int) -> float:
    """Share of the query's idf mass in terms the KB has: `terms` are (count in the query, document frequency
    in the KB) per distinct term, `chunk_count` the KB's size. 1.0 for a query without terms (nothing to
    miss) or an empty KB (nothing to weigh)."""
    n = max(int(chunk_count), 0)
    if n == 0:
        return 1.0
    unseen = math.log((n + 0.5) / 0.5)
    total = matched = 0.0
    for qtf, df in terms:
        if df > 0:
            weight = qtf * max(math.log((n - df + 0.5) / (df + 0.5)), 0.0)
            matched += weight
        else:
            weight = qtf * unseen
        total += weight
    return matched / total if total > 0 else 1.0
