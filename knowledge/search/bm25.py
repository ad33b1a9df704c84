"""BM25 (Okapi, rank-bm25's variant) over the KB's inverted index, scored in numpy.

score(chunk) = sum over query tokens t of idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))
idf(t) = ln(N - df + 0.5) - ln(df + 0.5); a negative idf (term in more than half the chunks) is replaced by
epsilon * (mean idf over the KB's vocabulary), exactly as rank_bm25.BM25Okapi does. A multi-KB search scores
with the KBs' statistics taken together (chunk count, average length, document frequencies), as if they were
one index, so scores from different KBs compare.

A query reads the KBs' and its terms' statistics and the terms' posting blocks (postings.py: packed arrays, about
a thousand postings a row) in one statement, and scores them with vectorised arithmetic; PostgreSQL's per-row cost
(~0.4 us per posting to unnest and aggregate in SQL) made dense posting lists (common Korean bigrams: 500k
postings in a question) far too slow. Nothing of a KB stays in memory between queries.

Top-k is exact but does not aggregate every posting (MaxScore, Turtle & Flood 1995):
1. threshold: the postings of the most selective terms give candidates; the best `limit` of them, scored
   exactly over all query terms, give a score the final k-th result cannot be below (theta);
2. terms ordered by their upper bound (weight x the term's best possible tf part): the low-bound terms whose
   bounds together stay under theta cannot lift a chunk into the top k by themselves, so only chunks with an
   essential (high-bound) term are candidates; a candidate whose essential score plus those bounds stays under
   theta is dropped, and the rest get the low-bound terms' scores by binary search in those terms' postings.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from django.db import DEFAULT_DB_ALIAS, connections

from knowledge.search.analysis import analyzer_for
from knowledge.search.language import lexical_coverage
from knowledge.search.postings import Postings, binary_cursor, unpack


@dataclass
class KbParams:
    kb_id: int
    language: str
    k1: float
    b: float
    epsilon: float


def _read_index(*, tenant, kb_ids: list[int], terms: list[str], using: str) -> tuple[dict, dict, dict]:
    """The KBs' statistics, their query terms' statistics and the terms' postings (in chunk-id order), in one
    statement (each round trip to the database costs as much as scoring thousands of postings, more on a busy
    machine)."""
    stats: dict[int, dict] = {}
    found: dict[tuple[int, str], tuple] = {}
    blocks: dict[tuple[int, str], list[Postings]] = {}
    with binary_cursor(using) as cursor:
        cursor.execute(
            """
            SELECT s.kb_id, s.chunk_count, s.total_length, s.version, s.average_idf, s.average_idf_version,
                   t.term, t.df, t.max_tf, t.min_length, b.first_chunk, b.size, b.data
            FROM search_indexstats s
            LEFT JOIN search_termstat t ON t.kb_id = s.kb_id AND t.term = ANY(%s::text[])
            LEFT JOIN search_postingblock b ON b.kb_id = t.kb_id AND b.term = t.term AND b.tenant_id = %s
            WHERE s.kb_id = ANY(%s)
            ORDER BY s.kb_id, t.term, b.first_chunk
            """,
            [terms, tenant.pk, kb_ids], binary=True,
        )
        for kb_id, n, total, version, avg, avg_version, term, df, max_tf, min_length, first, size, data in cursor:
            if kb_id not in stats:
                stats[kb_id] = {"n": n, "total": total, "version": version, "avg_idf": avg, "avg_version": avg_version}
            if term is None:
                continue
            found[(kb_id, term)] = (df, max_tf, min_length)
            parts = blocks.setdefault((kb_id, term), [])
            if data is not None:
                parts.append(unpack(first, size, data))
    return stats, found, {key: _ordered(parts) for key, parts in blocks.items()}


def _average_idf(kb_id: int, stats: dict, using: str) -> float:
    """Mean idf over the KB's vocabulary, cached on the stats row until the index changes (by searches on the
    primary: a replica is read-only)."""
    if stats["avg_idf"] is not None and stats["avg_version"] == stats["version"]:
        return stats["avg_idf"]
    n = stats["n"]
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT AVG(ln(%s - df + 0.5) - ln(df + 0.5)) FROM search_termstat WHERE kb_id = %s",
            [float(n), kb_id],
        )
        value = float(cursor.fetchone()[0] or 0.0)
        if using != DEFAULT_DB_ALIAS:
            return value
        cursor.execute(
            "UPDATE search_indexstats SET average_idf = %s, average_idf_version = %s WHERE kb_id = %s AND version = %s",
            [value, stats["version"], kb_id, stats["version"]],
        )
    return value


@dataclass
class _Union:
    """Statistics of several KBs as if they were one index, so their chunks' scores compare (a term rare in a
    small KB must not outrank the answer in a KB where that term is common)."""

    n: int
    avglen: float
    df: Counter
    kbs: list[tuple[int, dict]]
    using: str

    def average_idf(self) -> float:
        # The chunk-weighted mean of each KB's mean idf: close to the union vocabulary's, without a scan of it.
        return sum(_average_idf(kb_id, s, self.using) * s["n"] for kb_id, s in self.kbs) / self.n


def _union_statistics(kbs: list[KbParams], stats: dict[int, dict], found: dict, using: str) -> _Union | None:
    indexed = [(p.kb_id, stats[p.kb_id]) for p in kbs
               if stats.get(p.kb_id) and stats[p.kb_id]["n"] > 0 and stats[p.kb_id]["total"] > 0]
    if len(indexed) < 2:
        return None
    n = sum(s["n"] for _, s in indexed)
    df: Counter = Counter()
    counted = {kb_id for kb_id, _ in indexed}
    for (kb_id, term), (term_df, _, _) in found.items():
        if kb_id in counted:
            df[term] += term_df
    return _Union(n=n, avglen=sum(s["total"] for _, s in indexed) / n, df=df, kbs=indexed, using=using)


def query_terms(query: str, language: str) -> Counter:
    return Counter(analyzer_for(language).tokens(query))


# Below this many postings in all, aggregating every posting (~12 ns each) costs less than finding a threshold.
PRUNE_ABOVE_POSTINGS = 100_000
# Postings the threshold step may read; it takes the most selective terms up to this (at least one term).
THRESHOLD_POSTINGS = 30_000
# Completing one candidate in one skipped term (a binary search, ~35 ns) costs about as much as aggregating
# this many postings (measured on the Korean benchmark corpus).
COMPLETION_COST = 3
_SLACK = 1e-9  # float sums in a different order may differ in the last bits
# Aggregation sums into an array over the postings' chunk-id range when it is at most this many times the
# number of postings; chunk ids spread wider (a KB filled slowly among busy tenants) are sorted instead.
DENSE_SPAN = 8


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
    postings: Postings | None = None

    def scores(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The term's score in each of its chunks (or in those at `positions`). The formula with the term's
        constants folded: weight (k1 + 1) tf / (tf + k1 (1 - b) + (k1 b / avglen) len)."""
        tfs, lengths = self.postings.tfs, self.postings.lengths
        if positions is not None:
            tfs, lengths = tfs[positions], lengths[positions]
        denominator = lengths * (self.k1 * self.b / self.avglen)  # in place from here: fewer temporaries
        denominator += tfs
        denominator += self.k1 * (1 - self.b)
        scores = tfs * (self.weight * (self.k1 + 1))
        scores /= denominator
        return scores


def _coverage(counts: dict[int, Counter], stats: dict[int, dict], found: dict) -> float:
    dfs: Counter = Counter()
    for (_kb_id, term), (df, _max_tf, _min_length) in found.items():
        dfs[term] += df
    qtf: Counter = Counter()
    for kb_counts in counts.values():
        qtf |= kb_counts  # the largest count of each term
    return lexical_coverage([(q, dfs[term]) for term, q in qtf.items()], sum(s["n"] for s in stats.values()))


def _tf_part(tf: float, length: float, k1: float, b: float, avglen: float) -> float:
    return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avglen))


def _query_terms(*, tenant, kbs: list[KbParams], query: str, document_ids: list[int] | None,
                 using: str, trace: dict) -> list[QueryTerm]:
    """The query's terms in each KB with their weights, bounds and postings (in the given documents only).
    Also notes in `trace` the query's lexical coverage of the KBs taken together (language.lexical_coverage),
    from the statistics this read anyway: fusion weighs the sides by it."""
    counts = {p.kb_id: query_terms(query, p.language) for p in kbs}
    all_terms = sorted({t for c in counts.values() for t in c})
    if not all_terms:
        trace["lexical_coverage"] = 1.0
        return []
    stats, found, blocks = _read_index(tenant=tenant, kb_ids=[p.kb_id for p in kbs], terms=all_terms, using=using)
    trace["lexical_coverage"] = _coverage(counts, stats, found)
    allowed = _chunks_of(tenant, document_ids, using) if document_ids is not None else None
    union = _union_statistics(kbs, stats, found, using)
    out = []
    for p in kbs:
        s = stats.get(p.kb_id)
        if not s or s["n"] <= 0 or s["total"] <= 0:
            continue
        n, avglen = (union.n, union.avglen) if union else (s["n"], s["total"] / s["n"])
        floor = None
        for term, qtf in counts[p.kb_id].items():
            df, max_tf, min_length = found.get((p.kb_id, term), (0, None, None))
            if not df:
                continue
            # min: the statistics are read in separate statements, so a document indexed in between can leave
            # a term's df above the chunk count just read, and log() of a negative number would fail the search.
            idf_df = min(union.df[term] if union else df, n)
            idf = math.log(n - idf_df + 0.5) - math.log(idf_df + 0.5)
            if idf < 0:
                if floor is None:
                    floor = p.epsilon * (union.average_idf() if union else _average_idf(p.kb_id, s, using))
                idf = floor
            weight = idf * qtf
            # Unknown bounds (an index from before they were kept): the tf part never reaches k1 + 1.
            best = (_tf_part(max_tf, min_length, p.k1, p.b, avglen) if max_tf and min_length is not None
                    else p.k1 + 1)
            postings = blocks.get((p.kb_id, term)) or Postings.empty()
            if allowed is not None:
                keep = np.isin(postings.ids, allowed)
                postings = Postings(postings.ids[keep], postings.tfs[keep], postings.lengths[keep])
            out.append(QueryTerm(p.kb_id, term, weight, p.k1, p.b, avglen, df, bound=max(0.0, weight * best),
                                 postings=postings))
    return out


def _chunks_of(tenant, document_ids: list[int], using: str) -> np.ndarray:
    with binary_cursor(using) as cursor:
        cursor.execute("SELECT id FROM knowledge_chunk WHERE tenant_id = %s AND document_id = ANY(%s)",
                       [tenant.pk, list(document_ids)], binary=True)
        return np.array([row[0] for row in cursor.fetchall()], dtype=np.int64)


def _ordered(parts: list[Postings]) -> Postings:
    """A term's blocks (in first-chunk order) as one list in chunk-id order; only fresh blocks that interleave
    with others need a sort."""
    if not parts:
        return Postings.empty()
    ids = np.concatenate([p.ids for p in parts])
    tfs = np.concatenate([p.tfs for p in parts])
    lengths = np.concatenate([p.lengths for p in parts])
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        order = np.argsort(ids, kind="stable")
        ids, tfs, lengths = ids[order], tfs[order], lengths[order]
    return Postings(ids, tfs, lengths)


def _aggregate(terms: list[QueryTerm]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct chunk ids of the terms' postings with the sum of the terms' scores in each."""
    if not terms:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    ids = np.concatenate([t.postings.ids for t in terms])
    scores = np.concatenate([t.scores() for t in terms])
    if len(terms) == 1 or not len(ids):
        return ids, scores
    low = int(ids.min())
    span = int(ids.max()) - low + 1
    if span <= DENSE_SPAN * len(ids):
        # A KB's chunk ids are mostly consecutive: sum into an array indexed by id (several times faster
        # than sorting the postings by id).
        offsets = ids - low
        present = np.zeros(span, dtype=bool)
        present[offsets] = True
        sums = np.bincount(offsets, weights=scores, minlength=span)
        found = np.flatnonzero(present)
        return found + low, sums[found]
    order = np.argsort(ids, kind="stable")
    ids, scores = ids[order], scores[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return ids[starts], np.add.reduceat(scores, starts)


def _complete(ids: np.ndarray, partial: np.ndarray, terms: list[QueryTerm]) -> np.ndarray:
    """`partial` plus each of `terms`' score in the chunks `ids` (sorted), found by binary search."""
    total = partial.copy()
    for t in terms:
        posting_ids = t.postings.ids
        if not len(posting_ids):
            continue
        at = np.searchsorted(posting_ids, ids)
        inside = at < len(posting_ids)
        hit = np.zeros(len(ids), dtype=bool)
        hit[inside] = posting_ids[at[inside]] == ids[inside]
        total[hit] += t.scores(at[hit])
    return total


def _top(ids: np.ndarray, scores: np.ndarray, terms: list[QueryTerm], limit: int) -> list[tuple[int, float]]:
    """The `limit` best (chunk id, score), best first, ties by chunk id. The finalists are scored again term by
    term in query order, so equal chunks get bit-equal scores whichever way they were found."""
    if len(ids) > limit:
        kth = np.partition(scores, len(scores) - limit)[len(scores) - limit]
        keep = scores >= kth - _SLACK
        ids = ids[keep]
    scores = _complete(ids, np.zeros(len(ids)), terms)
    order = np.lexsort((ids, -scores))[:limit]
    return [(int(ids[i]), float(scores[i])) for i in order]


def _threshold(terms: list[QueryTerm], limit: int) -> float | None:
    """A score the exact k-th result is at least: the k-th best exact score among candidates drawn from the
    most selective terms (None when they give fewer than `limit` chunks)."""
    chosen, postings = [], 0
    for t in sorted(terms, key=lambda t: (t.df, -t.bound)):
        if postings and postings + len(t.postings) > THRESHOLD_POSTINGS:
            break
        chosen.append(t)
        postings += len(t.postings)
        if postings >= 4 * limit:  # enough candidates for a good k-th score; more would only cost time
            break
    if len(chosen) == len(terms):
        return None
    ids = np.unique(np.concatenate([t.postings.ids for t in chosen]))
    if len(ids) < limit:
        return None
    exact = _complete(ids, np.zeros(len(ids)), terms)
    return float(np.partition(exact, len(exact) - limit)[len(exact) - limit])


def _essential(terms: list[QueryTerm], theta: float) -> tuple[list[bool], float]:
    """Which terms must be aggregated for a top k at or above `theta`: all but the longest run of lowest-bound
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
    """Whether completing the essential (`scan`) terms' chunks by binary searches (at worst one per posting
    and skipped term) costs less than aggregating the skipped terms' postings as well."""
    essential = sum(len(t.postings) for t, scanned in zip(terms, scan, strict=True) if scanned)
    skipped = sum(len(t.postings) for t in terms) - essential
    return essential * (len(terms) - sum(scan)) * COMPLETION_COST < skipped


def bm25_search(*, tenant, kbs: list[KbParams], query: str, limit: int, document_ids: list[int] | None = None,
                prune: bool = True, trace: dict | None = None, using: str = DEFAULT_DB_ALIAS) -> list[tuple[int, float]]:
    """Top `limit` (chunk_id, score) of the KBs for `query`, best first; only chunks matching a query term.
    `prune=False` aggregates every posting of the query's terms (the same result; kept for tests and
    benchmarks); `trace`, when given, is filled with what the search did (terms, postings, threshold).
    `using`: the database alias to read (a replica, config.replicas)."""
    if not kbs or limit <= 0:
        return []
    trace = trace if trace is not None else {}
    terms = _query_terms(tenant=tenant, kbs=kbs, query=query, document_ids=document_ids, using=using, trace=trace)
    if not terms:
        return []
    trace.update(terms=len(terms), postings=sum(len(t.postings) for t in terms), pruned=False)
    if (not prune or len(terms) == 1 or trace["postings"] <= PRUNE_ABOVE_POSTINGS
            or any(t.weight <= 0 for t in terms)):  # a negative weight breaks the bounds' arithmetic
        return _top(*_aggregate(terms), terms, limit)
    if not _pruning_can_pay(terms, _essential(terms, sum(t.bound for t in terms))[0]):
        trace["fallback"] = "common-words"  # even the best possible threshold would leave too much to complete
        return _top(*_aggregate(terms), terms, limit)
    theta = _threshold(terms, limit)
    trace["threshold"] = theta
    if theta is None:
        return _top(*_aggregate(terms), terms, limit)
    scan, below = _essential(terms, theta)
    essential = [t for t, scanned in zip(terms, scan, strict=True) if scanned]
    rest = [t for t, scanned in zip(terms, scan, strict=True) if not scanned]
    ids, partial = _aggregate(essential)
    keep = partial >= theta - below - _SLACK
    ids, partial = ids[keep], partial[keep]
    skipped = sum(len(t.postings) for t in rest)
    if len(ids) * len(rest) * COMPLETION_COST < skipped:
        trace.update(pruned=True, scanned_terms=len(essential), scanned_postings=trace["postings"] - skipped)
        return _top(ids, _complete(ids, partial, rest), terms, limit)
    # So many candidates survive that summing the other terms' postings costs less than a binary search per
    # candidate and term.
    trace["fallback"] = "many-candidates"
    rest_ids, rest_sums = _aggregate(rest)
    at = np.searchsorted(rest_ids, ids)
    hit = at < len(rest_ids)
    hit[hit] = rest_ids[at[hit]] == ids[hit]
    partial[hit] += rest_sums[at[hit]]
    return _top(ids, partial, terms, limit)
