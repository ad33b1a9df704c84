"""Ranking metrics over document ids (binary or graded relevance), as BEIR/trec_eval compute them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def dedupe(ids: Iterable) -> list:
    """Keep the first occurrence of each id (chunks of one document collapse to its best rank)."""
    seen: set = set()
    out = []
    for item in ids:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def ndcg_at_k(ranked: Sequence, relevant: dict, k: int = 10) -> float:
    """nDCG@k with gains = relevance grades (linear gain, log2 discount), as pytrec_eval's ndcg_cut."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence, relevant: dict, k: int = 10) -> float:
    wanted = {doc for doc, g in relevant.items() if g > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def mrr_at_k(ranked: Sequence, relevant: dict, k: int = 10) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_rankings(rankings: dict[str, Sequence], qrels: dict[str, dict], *, k: int = 10) -> dict[str, float]:
    """Mean metrics over the judged queries; a query missing from `rankings` counts as an empty ranking."""
    judged = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if not judged:
        return {f"ndcg@{10}": 0.0, f"recall@{k}": 0.0, f"mrr@{10}": 0.0, "queries": 0}
    totals = {"ndcg@10": 0.0, f"recall@{k}": 0.0, "mrr@10": 0.0}
    for qid in judged:
        ranked = dedupe(rankings.get(qid, []))
        totals["ndcg@10"] += ndcg_at_k(ranked, qrels[qid], 10)
        totals[f"recall@{k}"] += recall_at_k(ranked, qrels[qid], k)
        totals["mrr@10"] += mrr_at_k(ranked, qrels[qid], 10)
    out = {name: value / len(judged) for name, value in totals.items()}
    out["queries"] = len(judged)
    return out
