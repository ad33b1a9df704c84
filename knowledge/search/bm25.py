"""BM25 (Okapi, rank-bm25's variant) scored inside PostgreSQL from the inverted index.

score(chunk) = sum over query tokens t of idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))
idf(t) = ln(N - df + 0.5) - ln(df + 0.5); a negative idf (term in more than half the chunks) is replaced by
epsilon * (mean idf over the KB's vocabulary), exactly as rank_bm25.BM25Okapi does. Statistics are per KB;
a multi-KB search scores each KB against its own statistics in the same SQL statement.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from django.db import connection, transaction

from knowledge.search.analysis import analyzer_for


@dataclass
class KbParams:
    kb_id: int
    language: str
    k1: float
    b: float
    epsilon: float


def _stats(kb_ids: list[int]) -> dict[int, dict]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT kb_id, chunk_count, total_length, version, average_idf, average_idf_version "
            "FROM search_indexstats WHERE kb_id = ANY(%s)",
            [kb_ids],
        )
        return {
            row[0]: {"n": row[1], "total": row[2], "version": row[3], "avg_idf": row[4], "avg_version": row[5]}
            for row in cursor.fetchall()
        }


def _average_idf(kb_id: int, stats: dict) -> float:
    """Mean idf over the KB's vocabulary, cached on the stats row until the index changes."""
    if stats["avg_idf"] is not None and stats["avg_version"] == stats["version"]:
        return stats["avg_idf"]
    n = stats["n"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT AVG(ln(%s - df + 0.5) - ln(df + 0.5)) FROM search_termstat WHERE kb_id = %s",
            [float(n), kb_id],
        )
        value = float(cursor.fetchone()[0] or 0.0)
        cursor.execute(
            "UPDATE search_indexstats SET average_idf = %s, average_idf_version = %s WHERE kb_id = %s AND version = %s",
            [value, stats["version"], kb_id, stats["version"]],
        )
    return value


def query_terms(query: str, language: str) -> Counter:
    return Counter(analyzer_for(language).tokens(query))


def bm25_search(*, tenant, kbs: list[KbParams], query: str, limit: int,
                document_ids: list[int] | None = None) -> list[tuple[int, float]]:
    """Top `limit` (chunk_id, score) of the KBs for `query`, best first; only chunks matching a query term."""
    if not kbs or limit <= 0:
        return []
    stats = _stats([p.kb_id for p in kbs])
    counts = {p.kb_id: query_terms(query, p.language) for p in kbs}
    all_terms = sorted({t for c in counts.values() for t in c})
    if not all_terms:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT kb_id, term, df FROM search_termstat WHERE kb_id = ANY(%s) AND term = ANY(%s::text[])",
            [[p.kb_id for p in kbs], all_terms],
        )
        dfs = {(kb_id, term): df for kb_id, term, df in cursor.fetchall()}
    rows = []  # (kb_id, term, weight, k1, b, avglen)
    for p in kbs:
        s = stats.get(p.kb_id)
        if not s or s["n"] <= 0 or s["total"] <= 0:
            continue
        n, avglen = s["n"], s["total"] / s["n"]
        floor = None
        for term, qtf in counts[p.kb_id].items():
            df = dfs.get((p.kb_id, term))
            if not df:
                continue
            idf = math.log(n - df + 0.5) - math.log(df + 0.5)
            if idf < 0:
                if floor is None:
                    floor = p.epsilon * _average_idf(p.kb_id, s)
                idf = floor
            rows.append((p.kb_id, term, idf * qtf, p.k1, p.b, avglen))
    if not rows:
        return []
    doc_filter = "AND pb.document_id = ANY(%s)" if document_ids is not None else ""
    params: list = [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                    [r[4] for r in rows], [r[5] for r in rows], tenant.pk]
    if document_ids is not None:
        params.append(list(document_ids))
    params.append(limit)
    # Set-returning unnest in the select list with a hash aggregate measured ~2x faster than LATERAL unnest
    # with a sort-based group (20k-chunk KB, common terms); enable_sort=off (this transaction only) makes the
    # planner pick the hash aggregate whatever its row estimate.
    sql = f"""
        WITH q AS (
            SELECT * FROM unnest(%s::bigint[], %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::float8[])
                AS q(kb_id, term, weight, k1, b, avglen)
        ), p AS (
            SELECT q.weight, q.k1, q.b, q.avglen,
                   unnest(pb.chunk_ids) AS chunk_id, unnest(pb.tfs) AS tf, unnest(pb.lengths) AS len
            FROM q JOIN search_postingblock pb ON pb.kb_id = q.kb_id AND pb.term = q.term
            WHERE pb.tenant_id = %s {doc_filter}
        )
        SELECT chunk_id, SUM(weight * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))) AS score
        FROM p
        GROUP BY chunk_id
        ORDER BY score DESC, chunk_id
        LIMIT %s
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('enable_sort', 'off', true)")
        cursor.execute(sql, params)
        return [(int(cid), float(score)) for cid, score in cursor.fetchall()]
