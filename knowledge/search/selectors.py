"""The one search entry point, used by chat, the search API, the retrieval test page and evaluation.

    search(*, tenant, kb_ids, query, k=8, filters=None, options=None, usage=None) -> SearchResult

Pipeline: [multi-query expansion] [translation into the passages' language] -> per query: BM25 (PostgreSQL
inverted index) + dense (pgvector HNSW) -> fusion with per-query weights (language.py, fusion.side_weights) ->
[fusion across queries] -> near-duplicate removal -> [cross-encoder rerank] -> [MMR] -> top k ->
[neighbouring chunks] -> [contextual compression]. Every step reads only the tenant's rows of the chosen KBs,
from a read replica when one is configured and fit to answer for the tenant (config.replicas).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError
from django.utils.translation import gettext as _

from accounts.errors import AppError
from accounts.tenancy import tenant_scope
from billing.errors import QuotaExceeded
from billing.types import Stage, UsageContext
from config import replicas
from knowledge.models import Chunk, KnowledgeBase
from knowledge.search import llm_steps, parallel, rerank
from knowledge.search.bm25 import KbParams, bm25_search
from knowledge.search.config import RetrievalSettings, SettingsError, clean_settings, settings_for
from knowledge.search.dense import dense_search, embed_query
from knowledge.search.fusion import Fused, fuse, mmr, near_duplicates, side_weights
from knowledge.search.language import kb_language, query_language
from knowledge.search.types import SearchHit, SearchResult

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000
FILTER_KEYS = {"document_ids"}


class SearchError(AppError):
    """Bad search input; `fields` maps a parameter to its message."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message, fields=fields)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _clean_filters(filters: dict | None) -> list[int] | None:
    if not filters:
        return None
    unknown = set(filters) - FILTER_KEYS
    if unknown:
        raise SearchError(_("Unknown filter: %(names)s.") % {"names": ", ".join(sorted(unknown))},
                          {"filters": _("Unknown filter.")})
    ids = filters.get("document_ids")
    if ids is None:
        return None
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError) as exc:
        raise SearchError(_("document_ids must be a list of integers."),
                          {"filters": _("document_ids must be a list of integers.")}) from exc


def _dense_side(*, tenant, kbs: list[KnowledgeBase], query: str, cfg: RetrievalSettings, document_ids,
                usage: UsageContext, using: str) -> tuple[list[tuple[int, float]], list[str], dict[str, float]]:
    """Embed the query once per embedding model and search each model's KBs: (hits, models that failed, timings).
    May run in another thread (see parallel.py), so it leaves the SearchResult to the caller."""
    hits: list[tuple[int, float]] = []
    failed: list[str] = []
    timings: dict[str, float] = {}
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for kb in kbs:
        groups[(kb.embedding_model, kb.embedding_dim)].append(kb.pk)
    for index, ((model, dim), ids) in enumerate(groups.items()):
        start = time.perf_counter()
        try:
            vector = embed_query(tenant=tenant, model=model, text=query, usage=usage.for_call(index))
        except QuotaExceeded:
            raise  # the payer is over a limit: say so (429), never "searched with keywords only"
        except Exception as exc:  # an embedder down or not installed: lexical search still answers
            logger.warning("query embedding with %s failed: %r", model, exc)
            failed.append(model)
            continue
        timings["embed_ms"] = timings.get("embed_ms", 0) + _ms(start)
        start = time.perf_counter()
        hits.extend(dense_search(tenant=tenant, kb_ids=ids, dim=dim, vector=vector, limit=cfg.candidates,
                                 document_ids=document_ids, model=model, using=using))
        timings["dense_ms"] = timings.get("dense_ms", 0) + _ms(start)
    if len(groups) > 1:
        hits.sort(key=lambda h: (-h[1], h[0]))
        hits = hits[: cfg.candidates]
    return hits, failed, timings


def _candidates_for_query(*, tenant, kbs: list[KnowledgeBase], query: str, cfg: RetrievalSettings,
                          per_kb: dict[int, RetrievalSettings], document_ids, result: SearchResult,
                          usage: UsageContext, using: str) -> list[Fused]:
    timings = result.timings_ms
    bm25_hits: list[tuple[int, float]] = []
    dense_hits: list[tuple[int, float]] = []
    bm25_trace: dict = {}
    dense = None
    if cfg.mode in ("hybrid", "dense"):
        dense = functools.partial(_dense_side, tenant=tenant, kbs=kbs, query=query, cfg=cfg,
                                  document_ids=document_ids, usage=usage, using=using)
        if cfg.mode == "hybrid" and parallel.side_by_side():
            dense = parallel.submit(dense)
    if cfg.mode in ("hybrid", "bm25"):
        start = time.perf_counter()
        params = [KbParams(kb.pk, kb.language, per_kb[kb.pk].k1, per_kb[kb.pk].b, per_kb[kb.pk].epsilon) for kb in kbs]
        bm25_hits = bm25_search(tenant=tenant, kbs=params, query=query, limit=cfg.candidates,
                                document_ids=document_ids, trace=bm25_trace, using=using)
        timings["bm25_ms"] = timings.get("bm25_ms", 0) + _ms(start)
    if dense is not None:
        dense_hits, failed, side_timings = dense.result() if isinstance(dense, Future) else dense()
        for key, value in side_timings.items():
            timings[key] = timings.get(key, 0) + value
        for model in failed:
            msg = _("The embedding model %(model)s is unavailable; searched with keywords only.") % {"model": model}
            if msg not in result.warnings:
                result.warnings.append(msg)
    if cfg.mode == "bm25":
        return _ranked(bm25_hits, "bm25")
    if cfg.mode == "dense":
        return _ranked(dense_hits, "dense")
    start = time.perf_counter()
    weights = _side_weights(tenant=tenant, kbs=kbs, query=query, cfg=cfg, using=using,
                            coverage=bm25_trace.get("lexical_coverage", 1.0))
    if result.weights is None:  # the question's own weighting (expansion queries come after it)
        result.weights = weights
    timings["weights_ms"] = timings.get("weights_ms", 0) + _ms(start)
    return fuse(bm25_hits, dense_hits, method=cfg.fusion, bm25_weight=weights["bm25"],
                dense_weight=weights["dense"], rrf_k=cfg.rrf_k)


def _side_weights(*, tenant, kbs: list[KnowledgeBase], query: str, cfg: RetrievalSettings, using: str,
                  coverage: float) -> dict:
    """This query's fusion weights (fusion.side_weights) and the evidence they rest on. `coverage`: the query's
    lexical coverage of the KBs, which the BM25 side measured from the statistics it read."""
    language, passages = query_language(query), kb_language(tenant=tenant, kbs=kbs, using=using)
    weights = side_weights(bm25_weight=cfg.bm25_weight,
                           dense_weight=cfg.effective_dense_weight(kbs[0].embedding_model, passages),
                           coverage=coverage, cross_language=bool(language and passages) and language != passages)
    return {"kb_language": passages, "lexical_coverage": round(coverage, 4),
            "lexical_trust": round(weights.lexical_trust, 4), "bm25": round(weights.bm25, 4),
            "dense": round(weights.dense, 4)}


def _translate(*, tenant, kbs: list[KnowledgeBase], query: str, cfg: RetrievalSettings, result: SearchResult,
               usage: UsageContext, using: str) -> None:
    """A question in another language than the passages' gets its translation as one more query variant (BM25
    can match it), when a generative model is configured; without one nothing happens, and a model that is
    down only costs a warning."""
    if cfg.mode == "dense" or not llm_steps.configured_model(cfg.expansion_model):
        return
    passages = kb_language(tenant=tenant, kbs=kbs, using=using)
    if not (result.query_language and passages) or result.query_language == passages:
        return
    start = time.perf_counter()
    try:
        translation = llm_steps.translate_query(
            tenant=tenant, query=query, language=passages, model=cfg.expansion_model,
            usage=usage.for_call(Stage.EXPANSION, "translation", stage=Stage.EXPANSION))
    except llm_steps.StepSkipped as exc:
        result.warnings.append(str(exc))
    else:
        if translation not in result.queries:
            result.queries.append(translation)
    result.timings_ms["translation_ms"] = _ms(start)


def _ranked(hits: list[tuple[int, float]], side: str) -> list[Fused]:
    out = []
    for rank, (cid, score) in enumerate(hits, 1):
        item = Fused(cid, score)
        if side == "bm25":
            item.bm25_score, item.bm25_rank = score, rank
        else:
            item.dense_score, item.dense_rank = score, rank
        out.append(item)
    return out


def _fuse_queries(rankings: list[list[Fused]], rrf_k: int) -> list[Fused]:
    """Multi-query: reciprocal rank fusion of each query's fused ranking (side details from the first query
    that found the chunk)."""
    if len(rankings) == 1:
        return rankings[0]
    merged: dict[int, Fused] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            if item.chunk_id not in merged:
                merged[item.chunk_id] = Fused(item.chunk_id, 0.0, item.bm25_score, item.bm25_rank,
                                              item.dense_score, item.dense_rank, item.bm25_part, item.dense_part)
            merged[item.chunk_id].score += 1.0 / (rrf_k + rank)
    return sorted(merged.values(), key=lambda f: (-f.score, f.chunk_id))


def search_payer(*, user_id: int | None = None, api_key_id: int | None = None) -> UsageContext:
    """Who pays for one search made outside a chat answer (API, test page): a key of its own."""
    return UsageContext(stage=Stage.SEARCH, idempotency_key=f"search:{uuid.uuid4().hex}", user_id=user_id,
                        api_key_id=api_key_id)


def search(*, tenant, kb_ids, query: str, k: int = 8, filters: dict | None = None,
           options: dict | None = None, usage: UsageContext | None = None) -> SearchResult:
    """Search the tenant's KBs `kb_ids` for `query`; best `k` chunks first.

    `filters`: {"document_ids": [...]} restricts to those documents. `options`: any retrieval setting to
    override for this call (mode, fusion, weights, neighbors, expansion...; see config.RetrievalSettings).
    `usage`: who pays for the search's model calls (query embeddings, expansion, compression), one context per
    search (search_payer(), or a chat answer's); each call is billed under its own stage with a key derived from
    it (UsageContext.for_call). None: the tenant pays. KB ids that are not the tenant's are ignored (callers
    validate ids they got from users). Raises QuotaExceeded when a model call would pass a usage limit.
    """
    started = time.perf_counter()
    query = (query or "").strip()
    if not query:
        raise SearchError(_("The query is empty."), {"query": _("Enter a query.")})
    if len(query) > MAX_QUERY_CHARS:
        raise SearchError(_("The query is too long."), {"query": _("At most %(n)s characters.") % {"n": MAX_QUERY_CHARS}})
    usage = usage or search_payer()
    try:
        overrides = clean_settings({**(options or {}), "k": k})
    except SettingsError as exc:
        raise SearchError(str(exc), exc.fields) from exc
    document_ids = _clean_filters(filters)

    with tenant_scope(tenant):
        using = replicas.read_alias(tenant=tenant)
        run = functools.partial(_search, tenant=tenant, kb_ids=kb_ids, query=query, overrides=overrides,
                                document_ids=document_ids, usage=usage)
        try:
            result = run(using=using)
        except (OperationalError, InterfaceError) as exc:
            if using == DEFAULT_DB_ALIAS:
                raise
            # The replica went away, or cancelled the query for a conflict with replay: the primary answers.
            replicas.mark_down(using, exc)
            result = run(using=DEFAULT_DB_ALIAS)
    result.timings_ms["total_ms"] = _ms(started)
    return result


def _search(*, tenant, kb_ids, query: str, overrides: dict, document_ids: list[int] | None, usage: UsageContext,
            using: str) -> SearchResult:
    """search() after its input checks, reading from the database alias `using`, in the tenant's scope."""
    wanted = [int(i) for i in kb_ids]
    found = {kb.pk: kb for kb in KnowledgeBase.objects.using(using).filter(tenant=tenant, pk__in=wanted)}
    kbs = [found[i] for i in dict.fromkeys(wanted) if i in found]
    cfg = settings_for(kbs[0], overrides) if kbs else RetrievalSettings(**overrides)
    result = SearchResult(query=query, hits=[], queries=[query], mode=cfg.mode, settings=cfg.as_dict(),
                          query_language=query_language(query))
    if not kbs:
        return result
    # BM25 statistics are per KB; parameters given for this call (k1, b, epsilon) apply to every KB.
    bm25_overrides = {key: overrides[key] for key in ("k1", "b", "epsilon") if key in overrides}
    per_kb = {kb.pk: settings_for(kb, bm25_overrides) for kb in kbs}

    if cfg.expansion:
        start = time.perf_counter()
        try:
            result.queries += llm_steps.expand_query(
                tenant=tenant, query=query, n=cfg.expansion_queries, model=cfg.expansion_model,
                usage=usage.for_call(Stage.EXPANSION, stage=Stage.EXPANSION))
        except llm_steps.StepSkipped as exc:
            result.warnings.append(str(exc))
        result.timings_ms["expansion_ms"] = _ms(start)

    _translate(tenant=tenant, kbs=kbs, query=query, cfg=cfg, result=result, usage=usage, using=using)

    rankings = [
        _candidates_for_query(tenant=tenant, kbs=kbs, query=q, cfg=cfg, per_kb=per_kb,
                              document_ids=document_ids, result=result,
                              usage=usage.for_call(Stage.EMBEDDING, index, stage=Stage.EMBEDDING), using=using)
        for index, q in enumerate(result.queries)
    ]
    start = time.perf_counter()
    ranked = _fuse_queries(rankings, cfg.rrf_k)
    result.timings_ms["fusion_ms"] = _ms(start)

    start = time.perf_counter()
    needs_vectors = cfg.mmr_lambda is not None
    pool_size = max(cfg.k * 3, cfg.rerank_top if cfg.rerank_model else 0, 24)
    pool = ranked[:pool_size]
    rows = _hydrate(tenant, [f.chunk_id for f in pool], [kb.pk for kb in kbs], with_vectors=needs_vectors,
                    using=using)
    pool = [f for f in pool if f.chunk_id in rows]
    drop = near_duplicates([rows[f.chunk_id]["text"] for f in pool], threshold=cfg.dedupe_threshold)
    pool = [f for i, f in enumerate(pool) if i not in drop]
    result.timings_ms["hydrate_ms"] = _ms(start)

    rerank_scores: dict[int, float] = {}
    if cfg.rerank_model and pool:
        start = time.perf_counter()
        head = pool[: cfg.rerank_top]
        try:
            scores = rerank.rerank_scores(cfg.rerank_model, query, [rows[f.chunk_id]["text"] for f in head])
            rerank_scores = {f.chunk_id: s for f, s in zip(head, scores, strict=True)}
            head.sort(key=lambda f: -rerank_scores[f.chunk_id])
            pool = head + pool[cfg.rerank_top:]
        except Exception as exc:  # missing model files or library: keep the fused order
            logger.warning("reranker %s failed: %r", cfg.rerank_model, exc)
            result.warnings.append(_("The reranker is unavailable; results are in fused order."))
        result.timings_ms["rerank_ms"] = _ms(start)

    if cfg.mmr_lambda is not None and pool:
        order = mmr(pool, [len(pool) - i for i in range(len(pool))],
                    [rows[f.chunk_id].get("embedding") for f in pool], lam=cfg.mmr_lambda, k=cfg.k)
        pool = [pool[i] for i in order]
    pool = pool[: cfg.k]

    result.hits = [_hit(f, rows[f.chunk_id], rerank_scores.get(f.chunk_id)) for f in pool]
    if cfg.neighbors and result.hits:
        _add_neighbors(tenant, result.hits, cfg.neighbors, using)
    if cfg.compression and result.hits:
        start = time.perf_counter()
        _compress(tenant, query, result, cfg, usage)
        result.timings_ms["compression_ms"] = _ms(start)
    return result


def _hydrate(tenant, chunk_ids: list[int], kb_ids: list[int], *, with_vectors: bool, using: str) -> dict[int, dict]:
    if not chunk_ids:
        return {}
    fields = ["id", "text", "document_id", "kb_id", "ordinal", "page", "heading_path", "document__title",
              "document__filename"]
    if with_vectors:
        fields.append("embedding")
    qs = Chunk.objects.using(using).filter(tenant=tenant, kb_id__in=kb_ids, pk__in=chunk_ids).values(*fields)
    return {row["id"]: row for row in qs}


def _hit(f: Fused, row: dict, rerank_score: float | None) -> SearchHit:
    return SearchHit(
        chunk_id=f.chunk_id, document_id=row["document_id"], kb_id=row["kb_id"], document_title=row["document__title"],
        text=row["text"], ordinal=row["ordinal"], page=row["page"], heading_path=row["heading_path"] or "",
        score=round(f.score, 6), bm25_score=f.bm25_score, dense_score=f.dense_score, bm25_rank=f.bm25_rank,
        dense_rank=f.dense_rank, rerank_score=rerank_score, document_filename=row["document__filename"] or "",
        bm25_part=round(f.bm25_part, 6), dense_part=round(f.dense_part, 6),
    )


def _add_neighbors(tenant, hits: list[SearchHit], span: int, using: str) -> None:
    wanted: dict[int, set[int]] = defaultdict(set)
    for hit in hits:
        wanted[hit.document_id].update(range(max(0, hit.ordinal - span), hit.ordinal + span + 1))
    texts: dict[tuple[int, int], str] = {}
    for document_id, ordinals in wanted.items():
        for ordinal, text in Chunk.objects.using(using).filter(
                tenant=tenant, document_id=document_id, ordinal__in=sorted(ordinals)).values_list("ordinal", "text"):
            texts[(document_id, ordinal)] = text
    for hit in hits:
        parts = [texts[(hit.document_id, o)] for o in range(hit.ordinal - span, hit.ordinal + span + 1)
                 if (hit.document_id, o) in texts]
        hit.context_text = "\n".join(parts)


def _compress(tenant, query: str, result: SearchResult, cfg: RetrievalSettings, usage: UsageContext) -> None:
    for hit in result.hits:
        try:
            hit.compressed_text = llm_steps.compress(
                tenant=tenant, query=query, text=hit.context_text or hit.text, model=cfg.compression_model,
                usage=usage.for_call(Stage.COMPRESSION, hit.chunk_id, stage=Stage.COMPRESSION))
        except llm_steps.StepSkipped as exc:
            result.warnings.append(str(exc))
            return  # the model is down: don't try once per hit
