"""Chunks written directly (no parsing/embedding pipeline) for retrieval tests: exact texts and vectors."""

import hashlib
import itertools

import numpy as np

from accounts.tenancy import tenant_scope
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.search.services import postings_index_document

_seq = itertools.count(1)


def make_search_kb(tenant, *, name=None, language="auto", model="use-multilingual", dim=512, retrieval=None):
    with tenant_scope(tenant):
        return KnowledgeBase.objects.create(tenant=tenant, name=name or f"Search KB {next(_seq)}", language=language,
                                            embedding_model=model, embedding_dim=dim, retrieval=retrieval or {})


def unit(vector) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    return v / np.linalg.norm(v)


def random_vector(dim=512, seed=None) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal(dim))


def make_indexed_document(tenant, kb, texts, *, title=None, vectors=None, index=True):
    """A ready document with one chunk per text (ordinal order), vectors given or random, BM25-indexed."""
    n = next(_seq)
    title = title if title is not None else f"Doc {n}"
    with tenant_scope(tenant):
        doc = Document.objects.create(
            tenant=tenant, kb=kb, title=title, filename=f"doc-{n}.txt",
            sha256=hashlib.sha256(f"{n}:{title}:{texts}".encode()).hexdigest(), status=Document.Status.READY,
            chunks_total=len(texts), chunks_embedded=len(texts),
        )
        for ordinal, text in enumerate(texts):
            vector = vectors[ordinal] if vectors is not None else random_vector(kb.embedding_dim, seed=n * 1000 + ordinal)
            Chunk.objects.create(tenant=tenant, kb=kb, document=doc, ordinal=ordinal, text=text,
                                 embedding=vector, embedding_dim=kb.embedding_dim)
    if index:
        postings_index_document(tenant=tenant, document=doc)
    return doc
