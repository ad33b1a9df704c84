"""Dense retrieval: pgvector HNSW (cosine) over the tenant's chunks of the chosen KBs.

One chunk table serves every embedding model through a partial HNSW index per dimension
(knowledge migration 0002), so the query repeats the index expression `embedding::vector(<dim>)` and its
predicate `embedding_dim = <dim>`. The connection runs with hnsw.iterative_scan=relaxed_order, so a filtered
scan keeps going until `limit` rows pass the tenant/KB filters; results are re-sorted exactly here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from knowledge.embeddings import get_embedder

_QUERY_CACHE: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_QUERY_CACHE_SIZE = 512
_cache_lock = threading.Lock()


def vector_literal(vector) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in np.asarray(vector).ravel()) + "]"


def embed_query(*, tenant, model: str, text: str, usage=None) -> np.ndarray:
    """The query's vector for `model`, memoised per process (the same question is often asked again)."""
    key = (model, text)
    with _cache_lock:
        hit = _QUERY_CACHE.get(key)
        if hit is not None:
            _QUERY_CACHE.move_to_end(key)
            return hit
    embedder = get_embedder(model)
    if getattr(embedder, "billed", False):
        vector = embedder.embed_query(text, tenant=tenant, usage=usage)
    else:
        vector = embedder.embed_query(text)
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if norm > 0:
        vector = vector / norm
    if not getattr(embedder, "billed", False):  # billed vectors are cheap to keep too, but tenants differ
        with _cache_lock:
            _QUERY_CACHE[key] = vector
            while len(_QUERY_CACHE) > _QUERY_CACHE_SIZE:
                _QUERY_CACHE.popitem(last=False)
    return vector


def dense_search(*, tenant, kb_ids: list[int], dim: int, vector, limit: int, document_ids: list[int] | None = None,
                 model: str | None = None, using: str = DEFAULT_DB_ALIAS) -> list[tuple[int, float]]:
    """Top `limit` (chunk_id, cosine similarity) among the KBs' chunks of dimension `dim`, best first, read
    from the database alias `using` (a replica, config.replicas). `model`: the model that embedded `vector`;
    only KBs whose vectors are that model's are searched, judged in the same statement (snapshot) that reads
    them, so a vector upgrade switching a KB meanwhile (knowledge.vectors) gives no hits rather than a mix."""
    if not kb_ids or limit <= 0:
        return []
    dim = int(dim)
    literal = vector_literal(vector)
    doc_filter = "AND document_id = ANY(%s)" if document_ids is not None else ""
    kb_filter = "kb_id = ANY(%s)"
    kb_params: list = [list(kb_ids)]
    if model is not None:  # an InitPlan, evaluated once
        kb_filter = ("kb_id = ANY(ARRAY(SELECT id FROM knowledge_knowledgebase WHERE id = ANY(%s) "
                     "AND embedding_model = %s))")
        kb_params.append(model)
    params: list = [literal, tenant.pk, *kb_params, dim]
    if document_ids is not None:
        params.append(list(document_ids))
    params += [literal, limit]
    sql = f"""
        SELECT id, embedding::vector({dim}) <=> %s::vector({dim}) AS distance
        FROM knowledge_chunk
        WHERE tenant_id = %s AND {kb_filter} AND embedding_dim = %s AND embedding IS NOT NULL {doc_filter}
        ORDER BY embedding::vector({dim}) <=> %s::vector({dim})
        LIMIT %s
    """
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        # The candidate list must not be cut short by the default ef_search (40).
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(40, min(1000, limit)))])
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    hits = [(int(cid), 1.0 - float(distance)) for cid, distance in rows if distance is not None]
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits
