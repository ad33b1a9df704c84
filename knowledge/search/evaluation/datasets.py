"""BEIR folders (knowledge.search.beir) loaded into a scratch tenant and scored per search mode: the
evaluate_retrieval command, bench/retrieval_quality.py and chat.answer_eval."""

from __future__ import annotations

import hashlib
import time
import uuid

import numpy as np
from django.db import transaction

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.search import dense
from knowledge.search.analysis import hangul_ratio
from knowledge.search.beir import Dataset
from knowledge.search.embedding_cache import embed_cached
from knowledge.search.evaluation import scoring
from knowledge.search.services import postings_index_documents


def scratch_tenant(label: str) -> Tenant:
    slug = f"eval-{uuid.uuid4().hex[:12]}"
    return Tenant.objects.create(name=f"Evaluation {label}"[:120], slug=slug)


def detect_corpus_language(dataset: Dataset, sample: int = 200) -> str:
    texts = [p.full_text for p in dataset.corpus[:sample]]
    ratio = float(np.mean([hangul_ratio(t) for t in texts])) if texts else 0.0
    return "ko" if ratio >= 0.2 else "en"


def load_dataset_into_kb(*, tenant: Tenant, dataset: Dataset, embedding_model: str, language: str,
                         vectors: np.ndarray | None = None, retrieval: dict | None = None,
                         progress=None) -> tuple[KnowledgeBase, dict[int, str]]:
    """One Document with one Chunk per passage (title kept as the document title), embedded with
    `embedding_model` (or the given vectors, same order as the corpus), then BM25-indexed.
    Returns the KB and {document id: corpus id}."""
    if vectors is None:
        vectors = embed_cached(embedding_model, [p.full_text for p in dataset.corpus], kind="documents")
    dim = int(vectors.shape[1])
    with tenant_scope(tenant):
        kb = KnowledgeBase.objects.create(
            tenant=tenant, name=f"{dataset.name}"[:120], language=language, embedding_model=embedding_model,
            embedding_dim=dim, retrieval=retrieval or {},
        )
        mapping: dict[int, str] = {}
        batch = 500
        for start in range(0, len(dataset.corpus), batch):
            passages = dataset.corpus[start:start + batch]
            with transaction.atomic():
                docs = Document.objects.bulk_create([
                    Document(tenant=tenant, kb=kb, title=(p.title or p.id)[:300], filename=f"{p.id}.txt"[:300],
                             content_type="text/plain", size=len(p.text.encode()),
                             sha256=hashlib.sha256(f"{p.id}\n{p.text}".encode()).hexdigest(),
                             status=Document.Status.READY, chunks_total=1, chunks_embedded=1)
                    for p in passages
                ])
                Chunk.objects.bulk_create([
                    Chunk(tenant=tenant, kb=kb, document=doc, ordinal=0, text=p.text, char_start=0,
                          char_end=len(p.text), embedding=vectors[start + i], embedding_dim=dim)
                    for i, (doc, p) in enumerate(zip(docs, passages, strict=True))
                ])
                for doc, p in zip(docs, passages, strict=True):
                    mapping[doc.pk] = p.id
            postings_index_documents(tenant=tenant, kb=kb, document_ids=[d.pk for d in docs])
            if progress:
                progress(min(start + batch, len(dataset.corpus)), len(dataset.corpus))
    return kb, mapping


def prime_query_vectors(model: str, texts: list[str], vectors: np.ndarray) -> None:
    """Put precomputed (disk-cached) query vectors into the search's per-process query cache."""
    with dense._cache_lock:
        for text, vector in zip(texts, vectors, strict=True):
            dense._QUERY_CACHE[(model, text.strip())] = np.asarray(vector, dtype=np.float32)
        while len(dense._QUERY_CACHE) > max(dense._QUERY_CACHE_SIZE, len(texts)):
            dense._QUERY_CACHE.popitem(last=False)


def evaluate_dataset_modes(*, tenant: Tenant, kb: KnowledgeBase, dataset: Dataset, mapping: dict[int, str],
                           modes: list[str], k: int = 10, options: dict | None = None) -> dict[str, dict]:
    """{mode: {"ndcg@10", "recall@10", "mrr@10", "queries", "ms_per_query"}} over the judged queries."""
    queries = dataset.judged_queries
    out = {}
    for mode in modes:
        started = time.perf_counter()
        totals = {"ndcg": 0.0, "recall": 0.0, "rr": 0.0}
        for qid, text in queries.items():
            ranked_docs = scoring.document_ranking(tenant=tenant, kb_ids=[kb.pk], query=text, depth=k,
                                           options={**(options or {}), "mode": mode})
            ranked = [mapping[d] for d in ranked_docs if d in mapping]
            scores = scoring.score_ranking(ranked, dataset.qrels[qid], k)
            for key in totals:
                totals[key] += scores[key]
        n = max(1, len(queries))
        out[mode] = {"ndcg@10": totals["ndcg"] / n, f"recall@{k}": totals["recall"] / n, "mrr@10": totals["rr"] / n,
                     "queries": len(queries), "ms_per_query": (time.perf_counter() - started) * 1000 / n}
    return out
