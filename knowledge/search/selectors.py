"""The one search entry point, used by chat, the search API, the retrieval test page and evaluation.

    search(*, tenant, kb_ids, query, k=8, filters=None, options=None) -> SearchResult

Pipeline: [multi-query expansion] -> per query: BM25 (PostgreSQL inverted index) + dense (pgvector HNSW) ->
fusion -> [fusion across queries] -> near-duplicate removal -> [cross-encoder rerank] -> [MMR] -> top k ->
[neighbouring chunks] -> [contextual compression]. Every step reads only the tenant's rows of the chosen KBs.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from concurrent.futures import Future

from django.utils.translation import gettext as _

from accounts.tenancy import tenant_scope
from knowledge.models import Chunk, KnowledgeBase
from knowledge.search import llm_steps, parallel
from knowledge.search.bm25 import KbParams, bm25_search
from knowledge.search.config import RetrievalSettings, SettingsError, clean_settings, settings_for
from knowledge.search.dense import dense_search, embed_query
from knowledge.search.fusion import Fused, fuse, mmr, near_duplicates
from knowledge.search.types import SearchHit, SearchResult

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000
FILTER_KEYS = {"document_ids"}


class SearchError(ValueError):
    """Bad search input; `fields` maps a parameter to its message."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


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
                usage_extra: dict) -> tuple[list[tuple[int, float]], list[str], dict[str, float]]:
    """Embed the query once per embedding model and search each model's KBs: (hits, models that failed, timings).
    May run in another thread (see parallel.py), so it leaves the SearchResult to the caller."""
    from billing.types import Stage, UsageContext

    hits: list[tuple[int, float]] = []
    failed: list[str] = []
    timings: dict[str, float] = {}
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for kb in kbs:
        groups[(kb.embedding_model, kb.embedding_dim)].append(kb.pk)
    for (model, dim), ids in groups.items():
        start = time.perf_counter()
        try:
            usage = UsageContext(stage=Stage.EMBEDDING, idempotency_key=f"search-embed:{time.time_ns()}",
                                 **usage_extra)
            vector = embed_query(tenant=tenant, model=model, text=query, usage=usage)
        except Exception as exc:  # a remote embedder down: lexical search still answers
            logger.warning("query embedding with %s failed: %r", model, exc)
            failed.append(model)
            continue
        timings["embed_ms"] = timings.get("embed_ms", 0) + _ms(start)
        start = time.perf_counter()
        hits.extend(dense_search(tenant=tenant, kb_ids=ids, dim=dim, vector=vector, limit=cfg.candidates,
                                 document_ids=document_ids))
        timings["dense_ms"] = timings.get("dense_ms", 0) + _ms(start)
    if len(groups) > 1:
        hits.sort(key=lambda h: (-h[1], h[0]))
        hits = hits[: cfg.candidates]
    return hits, failed, timings


def _candidates_for_query(*, tenant, kbs: list[KnowledgeBase], query: str, cfg: RetrievalSettings,
                          per_kb: dict[int, RetrievalSettings], document_ids, result: SearchResult,
                          usage_extra: dict) -> list[Fused]:
    timings = result.timings_ms
    bm25_hits: list[tuple[int, float]] = []
    dense_hits: list[tuple[int, float]] = []
    dense = None
    if cfg.mode in ("hybrid", "dense"):
        dense = functools.partial(_dense_side, tenant=tenant, kbs=kbs, query=query, cfg=cfg,
                                  document_ids=document_ids, usage_extra=usage_extra)
        if cfg.mode == "hybrid" and parallel.side_by_side():
            dense = parallel.submit(dense)
    if cfg.mode in ("hybrid", "bm25"):
        start = time.perf_counter()
        params = [KbParams(kb.pk, kb.language, per_kb[kb.pk].k1, per_kb[kb.pk].b, per_kb[kb.pk].epsilon) for kb in kbs]
        bm25_hits = bm25_search(tenant=tenant, kbs=params, query=query, limit=cfg.candidates,
                                document_ids=document_ids)
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
    first = kbs[0]
    return fuse(bm25_hits, dense_hits, method=cfg.fusion, bm25_weight=cfg.bm25_weight,
                dense_weight=cfg.effective_dense_weight(first.embedding_model), rrf_k=cfg.rrf_k)


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
                                              item.dense_score, item.dense_rank)
            merged[item.chunk_id].score += 1.0 / (rrf_k + rank)
    return sorted(merged.values(), key=lambda f: (-f.score, f.chunk_id))


def search(*, tenant, kb_ids, query: str, k: int = 8, filters: dict | None = None,
           options: dict | None = None) -> SearchResult:
    """Search the tenant's KBs `kb_ids` for `query`; best `k` chunks first.

    `filters`: {"document_ids": [...]} restricts to those documents. `options`: any retrieval setting to
    override for this call (mode, fusion, weights, neighbors, expansion...; see config.RetrievalSettings) and
    "usage": {"user_id", "api_key_id", "conversation_id", "message_id"} for billing the LLM/embedding steps.
    KB ids that are not the tenant's are ignored (callers validate ids they got from users).
    """
    started = time.perf_counter()
    query = (query or "").strip()
    if not query:
        raise SearchError(_("The query is empty."), {"query": _("Enter a query.")})
    if len(query) > MAX_QUERY_CHARS:
        raise SearchError(_("The query is too long."), {"query": _("At most %(n)s characters.") % {"n": MAX_QUERY_CHARS}})
    options = dict(options or {})
    usage_extra = {key: value for key, value in (options.pop("usage", None) or {}).items()
                   if key in ("user_id", "api_key_id", "assistant_id", "conversation_id", "message_id")}
    try:
        overrides = clean_settings({**options, "k": k})
    except SettingsError as exc:
        raise SearchError(str(exc), exc.errors) from exc
    document_ids = _clean_filters(filters)

    with tenant_scope(tenant):
        wanted = [int(i) for i in kb_ids]
        found = {kb.pk: kb for kb in KnowledgeBase.objects.filter(tenant=tenant, pk__in=wanted)}
        kbs = [found[i] for i in dict.fromkeys(wanted) if i in found]
        cfg = settings_for(kbs[0], overrides) if kbs else RetrievalSettings(**overrides)
        result = SearchResult(query=query, hits=[], queries=[query], mode=cfg.mode, settings=cfg.as_dict())
        if not kbs:
            return result
        # BM25 statistics are per KB; parameters given for this call (k1, b, epsilon) apply to every KB.
        bm25_overrides = {key: overrides[key] for key in ("k1", "b", "epsilon") if key in overrides}
        per_kb = {kb.pk: settings_for(kb, bm25_overrides) for kb in kbs}

        if cfg.expansion:
            start = time.perf_counter()
            try:
                result.queries += llm_steps.expand_query(tenant=tenant, query=query, n=cfg.expansion_queries,
                                                         model=cfg.expansion_model, usage_extra=usage_extra)
            except llm_steps.StepSkipped as exc:
                result.warnings.append(str(exc))
            result.timings_ms["expansion_ms"] = _ms(start)

        rankings = [
            _candidates_for_query(tenant=tenant, kbs=kbs, query=q, cfg=cfg, per_kb=per_kb,
                                  document_ids=document_ids, result=result, usage_extra=usage_extra)
            for q in result.queries
        ]
        start = time.perf_counter()
        ranked = _fuse_queries(rankings, cfg.rrf_k)
        result.timings_ms["fusion_ms"] = _ms(start)

        start = time.perf_counter()
        needs_vectors = cfg.mmr_lambda is not None
        pool_size = max(cfg.k * 3, cfg.rerank_top if cfg.rerank_model else 0, 24)
        pool = ranked[:pool_size]
        rows = _hydrate(tenant, [f.chunk_id for f in pool], [kb.pk for kb in kbs], with_vectors=needs_vectors)
        pool = [f for f in pool if f.chunk_id in rows]
        drop = near_duplicates([rows[f.chunk_id]["text"] for f in pool], threshold=cfg.dedupe_threshold)
        pool = [f for i, f in enumerate(pool) if i not in drop]
        result.timings_ms["hydrate_ms"] = _ms(start)

        rerank_scores: dict[int, float] = {}
        if cfg.rerank_model and pool:
            start = time.perf_counter()
            head = pool[: cfg.rerank_top]
            try:
                from knowledge.search.rerank import rerank_scores as score_pairs

                scores = score_pairs(cfg.rerank_model, query, [rows[f.chunk_id]["text"] for f in head])
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
            _add_neighbors(tenant, result.hits, cfg.neighbors)
        if cfg.compression and result.hits:
            start = time.perf_counter()
            _compress(tenant, query, result, cfg, usage_extra)
            result.timings_ms["compression_ms"] = _ms(start)
    result.timings_ms["total_ms"] = _ms(started)
    return result


def _hydrate(tenant, chunk_ids: list[int], kb_ids: list[int], *, with_vectors: bool) -> dict[int, dict]:
    if not chunk_ids:
        return {}
    fields = ["id", "text", "document_id", "kb_id", "ordinal", "page", "heading_path", "document__title",
              "document__filename"]
    if with_vectors:
        fields.append("embedding")
    qs = Chunk.objects.filter(tenant=tenant, kb_id__in=kb_ids, pk__in=chunk_ids).values(*fields)
    return {row["id"]: row for row in qs}


def _hit(f: Fused, row: dict, rerank_score: float | None) -> SearchHit:
    return SearchHit(
        chunk_id=f.chunk_id, document_id=row["document_id"], kb_id=row["kb_id"], document_title=row["document__title"],
        text=row["text"], ordinal=row["ordinal"], page=row["page"], heading_path=row["heading_path"] or "",
        score=round(f.score, 6), bm25_score=f.bm25_score, dense_score=f.dense_score, bm25_rank=f.bm25_rank,
        dense_rank=f.dense_rank, rerank_score=rerank_score, document_filename=row["document__filename"] or "",
    )


def _add_neighbors(tenant, hits: list[SearchHit], span: int) -> None:
    wanted: dict[int, set[int]] = defaultdict(set)
    for hit in hits:
        wanted[hit.document_id].update(range(max(0, hit.ordinal - span), hit.ordinal + span + 1))
    texts: dict[tuple[int, int], str] = {}
    for document_id, ordinals in wanted.items():
        for ordinal, text in Chunk.objects.filter(tenant=tenant, document_id=document_id,
                                                  ordinal__in=sorted(ordinals)).values_list("ordinal", "text"):
            texts[(document_id, ordinal)] = text
    for hit in hits:
        parts = [texts[(hit.document_id, o)] for o in range(hit.ordinal - span, hit.ordinal + span + 1)
                 if (hit.document_id, o) in texts]
        hit.context_text = "\n".join(parts)


def _compress(tenant, query: str, result: SearchResult, cfg: RetrievalSettings, usage_extra: dict) -> None:
    for hit in result.hits:
        try:
            hit.compressed_text = llm_steps.compress(tenant=tenant, query=query, text=hit.context_text or hit.text,
                                                     model=cfg.compression_model, usage_extra=usage_extra)
        except llm_steps.StepSkipped as exc:
            result.warnings.append(str(exc))
            return  # the model is down: don't try once per hit
