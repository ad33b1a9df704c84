"""BM25 (Okapi, rank-bm25's variant) scored inside PostgreSQL from the inverted index.

score(chunk) = sum over query tokens t of idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))
idf(t) = ln(N - df + 0.5) - ln(df + 0.5); a negative idf (term in more than half the chunks) is replaced by
epsilon * (mean idf over the KB's vocabulary), exactly as rank_bm25.BM25Okapi does. Statistics are per KB;
a multi-KB search scores each KB against its own statistics in the same SQL statement.

Top-k is exact but does not score every posting of every query term (MaxScore, Turtle & Flood 1995):
1. threshold: the postings of the most selective terms give candidates; the best `limit` of them, scored
   exactly over all query terms, give a score the final k-th result cannot be below (theta);
2. terms ordered by their upper bound (weight x the term's best possible tf part): the low-bound terms whose
   bounds together stay under theta cannot lift a chunk into the top k by themselves, so only chunks with an
   essential (high-bound) term are candidates; a candidate whose essential score plus those bounds stays under
   theta is dropped, and the rest get the low-bound terms' scores by looking up their own document's block.
Common words then cost an index lookup per surviving candidate instead of a scan of most of the KB.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

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


# Below this many postings in all, scoring every posting is as fast as pruning (two statements instead of one).
PRUNE_ABOVE_POSTINGS = 20_000
# Postings the threshold step may read; it takes the most selective terms up to this (at least one term).
THRESHOLD_POSTINGS = 30_000
# One candidate's lookup in one term's block costs about as much as scanning this many postings (measured:
# ~10 us per lookup, ~1 us per scanned posting).
COMPLETION_COST = 10
_SLACK = 1e-9  # float sums in a different order may differ in the last bits


@dataclass
class QueryTerm:
    kb_id: int
    term: str
    weight: float  # idf x query frequency
    k1: float
    b: float
    avglen: float
    df: int
    bound: float = field(default=0.0)  # no chunk gets more than this from the term


def _tf_part(tf: float, length: float, k1: float, b: float, avglen: float) -> float:
    return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avglen))


def _query_terms(kbs: list[KbParams], query: str) -> list[QueryTerm]:
    stats = _stats([p.kb_id for p in kbs])
    counts = {p.kb_id: query_terms(query, p.language) for p in kbs}
    all_terms = sorted({t for c in counts.values() for t in c})
    if not all_terms:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT kb_id, term, df, max_tf, min_length FROM search_termstat "
            "WHERE kb_id = ANY(%s) AND term = ANY(%s::text[])",
            [[p.kb_id for p in kbs], all_terms],
        )
        found = {(kb_id, term): (df, max_tf, min_length) for kb_id, term, df, max_tf, min_length in cursor.fetchall()}
    out = []
    for p in kbs:
        s = stats.get(p.kb_id)
        if not s or s["n"] <= 0 or s["total"] <= 0:
            continue
        n, avglen = s["n"], s["total"] / s["n"]
        floor = None
        for term, qtf in counts[p.kb_id].items():
            df, max_tf, min_length = found.get((p.kb_id, term), (0, None, None))
            if not df:
                continue
            idf = math.log(n - df + 0.5) - math.log(df + 0.5)
            if idf < 0:
                if floor is None:
                    floor = p.epsilon * _average_idf(p.kb_id, s)
                idf = floor
            weight = idf * qtf
            # Unknown bounds (an index from before they were kept): the tf part never reaches k1 + 1.
            best = (_tf_part(max_tf, min_length, p.k1, p.b, avglen) if max_tf and min_length is not None
                    else p.k1 + 1)
            out.append(QueryTerm(p.kb_id, term, weight, p.k1, p.b, avglen, df, bound=max(0.0, weight * best)))
    return out


# The per-posting formula with each term's constants folded: w1 = weight (k1 + 1), ka = k1 (1 - b),
# kb = k1 b / avglen (measured ~5% faster than the textbook form; equal to 1e-12).
_SCORE = "{w1} * {tf} / ({tf} + {ka} + {kb} * {len})"


def _scored(*, tenant, terms: list[QueryTerm], scan: list[bool], limit: int, document_ids: list[int] | None,
            cut: float | None = None, candidates: int | None = None) -> list[tuple[int, float]]:
    """Exact scores of the best chunks among those holding a `scan` term.

    The postings of the scan terms give candidates with partial scores; `cut` drops candidates whose partial
    score is below it, `candidates` keeps only that many best partial scores; the other terms' scores are then
    added from each candidate's own (KB, term, document) block. Returns the `limit` best, best first."""
    doc_filter = "AND pb.document_id = ANY(%(documents)s)" if document_ids is not None else ""
    complete = not all(scan)
    partial = _SCORE.format(w1="w1", tf="tf", ka="ka", kb="kb", len="len")
    having = "HAVING SUM(" + partial + ") >= %(cut)s" if cut is not None else ""
    keep = "ORDER BY partial DESC, chunk_id LIMIT %(candidates)s" if candidates is not None else ""
    completion = ""
    if complete:
        extra = _SCORE.format(w1="q.w1", tf="pb.tfs[i]", ka="q.ka", kb="q.kb", len="pb.lengths[i]")
        # A correlated subquery: planned on its own, so it is always one (KB, term, document) index lookup
        # per candidate and term (as a join, low row estimates made the planner scan whole term ranges).
        completion = f"""
        , x AS (
            SELECT c.chunk_id, SUM((
                SELECT {extra}
                FROM search_postingblock pb, array_position(pb.chunk_ids, c.chunk_id) AS i
                WHERE pb.kb_id = q.kb_id AND pb.term = q.term AND pb.document_id = c.document_id
                    AND pb.tenant_id = %(tenant)s AND i IS NOT NULL
            )) AS extra
            FROM c JOIN q ON q.kb_id = c.kb_id AND NOT q.scan
            GROUP BY c.chunk_id
        )"""
    final = ("SELECT c.chunk_id, c.partial + COALESCE(x.extra, 0) AS score FROM c LEFT JOIN x USING (chunk_id)"
             if complete else "SELECT chunk_id, partial AS score FROM c")
    # Set-returning unnest in the select list with a hash aggregate measured ~2x faster than LATERAL unnest
    # with a sort-based group (20k-chunk KB, common terms); enable_sort=off (this transaction only) makes the
    # planner pick the hash aggregate whatever its row estimate. The candidates' KB and document are carried
    # (two more aggregates per posting, ~12% of a scan) only when completion needs them.
    located = "q.kb_id, pb.document_id," if complete else ""
    locate = "MIN(kb_id) AS kb_id, MIN(document_id) AS document_id," if complete else ""
    sql = f"""
        WITH q AS MATERIALIZED (
            SELECT * FROM unnest(%(kb)s::bigint[], %(term)s::text[], %(w1)s::float8[], %(ka)s::float8[],
                                 %(kb_len)s::float8[], %(scan)s::bool[])
                AS q(kb_id, term, w1, ka, kb, scan)
        ), p AS (
            SELECT {located} q.w1, q.ka, q.kb,
                   unnest(pb.chunk_ids) AS chunk_id, unnest(pb.tfs) AS tf, unnest(pb.lengths) AS len
            FROM q JOIN search_postingblock pb ON pb.kb_id = q.kb_id AND pb.term = q.term
            WHERE q.scan AND pb.tenant_id = %(tenant)s {doc_filter}
        ), c AS {"MATERIALIZED" if complete else "NOT MATERIALIZED"} (
            SELECT chunk_id, {locate} SUM({partial}) AS partial
            FROM p GROUP BY chunk_id {having} {keep}
        ){completion}
        {final}
        ORDER BY score DESC, chunk_id
        LIMIT %(limit)s
    """
    params = {
        "kb": [t.kb_id for t in terms], "term": [t.term for t in terms],
        "w1": [t.weight * (t.k1 + 1) for t in terms], "ka": [t.k1 * (1 - t.b) for t in terms],
        "kb_len": [t.k1 * t.b / t.avglen for t in terms],
        "scan": scan, "tenant": tenant.pk, "documents": list(document_ids or []), "cut": cut,
        "candidates": candidates, "limit": limit,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('enable_sort', 'off', true)")
        cursor.execute(sql, params)
        return [(int(cid), float(score)) for cid, score in cursor.fetchall()]


def _threshold(*, tenant, terms: list[QueryTerm], limit: int, document_ids) -> float | None:
    """A score the exact k-th result is at least: the k-th best exact score among candidates drawn from the
    most selective terms (None when they give fewer than `limit` chunks)."""
    scan = [False] * len(terms)
    postings = 0
    for i in sorted(range(len(terms)), key=lambda i: (terms[i].df, -terms[i].bound)):
        if postings and postings + terms[i].df > THRESHOLD_POSTINGS:
            break
        scan[i] = True
        postings += terms[i].df
        if postings >= 4 * limit:  # enough candidates for a good k-th score; more would only cost time
            break
    if all(scan):
        return None
    best = _scored(tenant=tenant, terms=terms, scan=scan, limit=limit, document_ids=document_ids, candidates=limit)
    return best[-1][1] if len(best) >= limit else None


def _essential(terms: list[QueryTerm], theta: float) -> tuple[list[bool], float]:
    """Which terms must be scanned for a top k at or above `theta`: all but the longest run of lowest-bound
    terms whose bounds sum below theta. Returns the mask and that sum."""
    scan = [True] * len(terms)
    below = 0.0
    for i in sorted(range(len(terms)), key=lambda i: terms[i].bound):
        if below + terms[i].bound >= theta - _SLACK:
            break
        below += terms[i].bound
        scan[i] = False
    return scan, below


def _pruning_can_pay(terms: list[QueryTerm], scan: list[bool]) -> bool:
    """Whether completing the essential (`scan`) terms' chunks by lookups (at worst one per posting and skipped
    term) costs less than scanning the skipped terms' postings as well."""
    essential = sum(t.df for t, scanned in zip(terms, scan, strict=True) if scanned)
    skipped = sum(t.df for t in terms) - essential
    return essential * (len(terms) - sum(scan)) * COMPLETION_COST < skipped


def bm25_search(*, tenant, kbs: list[KbParams], query: str, limit: int, document_ids: list[int] | None = None,
                prune: bool = True, trace: dict | None = None) -> list[tuple[int, float]]:
    """Top `limit` (chunk_id, score) of the KBs for `query`, best first; only chunks matching a query term.
    `prune=False` scores every posting of the query's terms (the same result; kept for tests and benchmarks);
    `trace`, when given, is filled with what the search did (terms, postings scanned, threshold)."""
    if not kbs or limit <= 0:
        return []
    terms = _query_terms(kbs, query)
    if not terms:
        return []
    trace = trace if trace is not None else {}
    trace.update(terms=len(terms), postings=sum(t.df for t in terms), pruned=False)
    everything = [True] * len(terms)
    if (not prune or len(terms) == 1 or trace["postings"] <= PRUNE_ABOVE_POSTINGS
            or any(t.weight <= 0 for t in terms)):  # a negative weight breaks the bounds' arithmetic
        return _scored(tenant=tenant, terms=terms, scan=everything, limit=limit, document_ids=document_ids)
    if not _pruning_can_pay(terms, _essential(terms, sum(t.bound for t in terms))[0]):
        trace["fallback"] = "common-words"  # even the best possible threshold would leave too much to complete
        return _scored(tenant=tenant, terms=terms, scan=everything, limit=limit, document_ids=document_ids)
    theta = _threshold(tenant=tenant, terms=terms, limit=limit, document_ids=document_ids)
    trace["threshold"] = theta
    if theta is None:
        return _scored(tenant=tenant, terms=terms, scan=everything, limit=limit, document_ids=document_ids)
    scan, below = _essential(terms, theta)
    cut = theta - below - _SLACK
    if not _pruning_can_pay(terms, scan):
        # Completing (at worst) every essential posting's chunk by lookups would cost more than scanning the
        # other terms' postings too: the query is all common words; score everything once.
        trace["fallback"] = "common-words"
        return _scored(tenant=tenant, terms=terms, scan=everything, limit=limit, document_ids=document_ids,
                       cut=theta - _SLACK)
    trace.update(pruned=True, scanned_terms=sum(scan),
                 scanned_postings=sum(t.df for t, scanned in zip(terms, scan, strict=True) if scanned))
    return _scored(tenant=tenant, terms=terms, scan=scan, limit=limit, document_ids=document_ids, cut=cut)
