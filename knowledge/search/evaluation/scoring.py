"""A search collapsed to a ranking of documents, and the metrics of one ranking."""

from __future__ import annotations

from knowledge.search.metrics import dedupe, mrr_at_k, ndcg_at_k, recall_at_k
from knowledge.search.selectors import search


def document_ranking(*, tenant, kb_ids: list[int], query: str, depth: int = 10, options: dict | None = None,
                     usage=None) -> list[int]:
    """Document ids, best first, at least `depth` distinct when the KBs have them. `usage`: who pays (search())."""
    k = min(100, max(depth * 3, depth))
    result = search(tenant=tenant, kb_ids=kb_ids, query=query, k=k, options=options, usage=usage)
    return dedupe(hit.document_id for hit in result.hits)[:max(depth, 10)]


def score_ranking(ranked: list, relevant: dict, k: int) -> dict[str, float]:
    return {"ndcg": ndcg_at_k(ranked, relevant, 10), "recall": recall_at_k(ranked, relevant, k),
            "rr": mrr_at_k(ranked, relevant, 10)}
