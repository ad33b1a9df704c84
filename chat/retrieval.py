"""Which chunks an assistant answers from: hybrid search over its knowledge bases, minus the irrelevant."""

from __future__ import annotations

import numpy as np

from billing.types import UsageContext
from chat import defaults
from knowledge.embeddings import SentenceTransformerEmbedder, UseEmbedder, get_embedder
from knowledge.models import KnowledgeBase
from knowledge.search.dense import embed_query
from knowledge.search.selectors import MAX_QUERY_CHARS, search
from knowledge.search.types import SearchResult

# Keys of Assistant.retrieval that chat itself interprets; the rest are search settings passed to search().
CHAT_KEYS = {"min_dense_score"}


def assistant_kb_ids(*, tenant, assistant) -> list[int]:
    """The assistant's knowledge bases, or all of the tenant's when none are linked (e.g. the demo)."""
    ids = list(assistant.knowledge_bases.filter(tenant=tenant).values_list("pk", flat=True))
    if not ids:
        ids = list(KnowledgeBase.objects.filter(tenant=tenant).values_list("pk", flat=True))
    return ids


def retrieve(*, tenant, assistant, query: str, usage: UsageContext | None = None) -> SearchResult:
    """Search the assistant's knowledge bases. `usage` names the answer, so the search's own model calls
    (query embedding, expansion, compression) are billed to it."""
    settings = dict(assistant.retrieval or {})
    kb_ids = assistant_kb_ids(tenant=tenant, assistant=assistant)
    if not kb_ids:
        return SearchResult(query=query, hits=[], warnings=["no knowledge base"])
    options = {key: value for key, value in settings.items() if key not in CHAT_KEYS and key != "k"}
    result = search(tenant=tenant, kb_ids=kb_ids, query=query[:MAX_QUERY_CHARS],
                    k=int(settings.get("k") or defaults.DEFAULT_K), options=options, usage=usage)
    result.hits = relevant_hits(result.hits, min_dense_score=settings.get("min_dense_score"))
    return result


def relevant_hits(hits: list, *, min_dense_score=None) -> list:
    """Drop hits that only the dense side found, with a low similarity: nearest is not the same as relevant."""
    floor = defaults.DEFAULT_MIN_DENSE_SCORE if min_dense_score is None else float(min_dense_score)
    return [
        hit for hit in hits
        if hit.bm25_rank is not None or hit.dense_score is None or hit.dense_score >= floor
    ]


TRANSFORMER_SENTENCES = 4
SENTENCE_FALLBACK_MODEL = "use-multilingual"  # packaged, multilingual, fast


def sentence_similarity(*, tenant, hits: list):
    """A dense similarity for extractive answers: the question against candidate passages, with the embedding
    model of the best hit's knowledge base when it is a fast in-process one (USE, sentence-transformers), else
    with multilingual USE: e5 takes ~10x longer per sentence and its cosines barely spread, and a paid embedding
    API is never called per answer. None: quote by words alone."""
    if not hits:
        return None
    model = (KnowledgeBase.objects.filter(tenant=tenant, pk=hits[0].kb_id)
             .values_list("embedding_model", flat=True).first())
    if not model:  # not this tenant's knowledge base
        return None
    try:
        embedder = get_embedder(model)
        if not isinstance(embedder, UseEmbedder | SentenceTransformerEmbedder):
            model = SENTENCE_FALLBACK_MODEL
            embedder = get_embedder(model)
    except Exception:  # noqa: BLE001 - an unknown or unloadable model: quote by words alone
        return None
    # A transformer on one CPU thread embeds ~4 sentences in 50 ms; USE (numpy) the 16 candidates in 25 ms.
    limit = TRANSFORMER_SENTENCES if isinstance(embedder, SentenceTransformerEmbedder) else None

    def similarity(question: str, texts: list[str]):
        texts = texts[:limit]
        vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
        query = embed_query(tenant=None, model=model, text=question)  # search embedded it already: memoised
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
        return vectors @ (query / max(float(np.linalg.norm(query)), 1e-9))

    return similarity
