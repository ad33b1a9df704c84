"""Ingestion embeds batch N+1 in a thread while it stores batch N and analyses its BM25 terms: the same chunks,
vectors and postings as one batch after another, and a failure in the thread fails or defers the document
like any embedding error, without duplicate chunks when it resumes."""

import threading

import numpy as np
import pytest

from accounts.tenancy import tenant_scope
from knowledge import pipeline
from knowledge.embeddings import EmbeddingError, get_embedder
from knowledge.models import Chunk, Document
from knowledge.search import services as search
from knowledge.search.models import IndexedDocument, PostingBlock, TermStat
from tests.factories.knowledge import make_document, make_kb

TEXT = "\n\n".join(f"Section {i}. 사내 문서 검색은 질문에 맞는 단락을 찾아 줍니다. Retrieval finds passages {i}. " * 6
                   for i in range(8))


@pytest.fixture
def kb(tenant_a):
    return make_kb(tenant_a.tenant, name="Handbook")


@pytest.fixture
def small_batches(settings):
    settings.INGEST_EMBED_BATCH = 2


@pytest.fixture
def embed_calls(monkeypatch):
    """Each embedding call: the thread it ran in and the first text; `fail_at` makes call n raise."""
    embedder_cls = type(get_embedder("use-multilingual"))
    original = embedder_cls.embed_documents
    calls = {"threads": [], "texts": 0, "fail_at": None, "error": None}

    def recording(self, texts, **kwargs):
        calls["threads"].append(threading.current_thread().name)
        if len(calls["threads"]) == calls["fail_at"]:
            raise calls["error"]
        calls["texts"] += len(texts)
        return original(self, texts, **kwargs)

    monkeypatch.setattr(embedder_cls, "embed_documents", recording)
    return calls


def _index(tenant, document):
    with tenant_scope(tenant):
        blocks = sorted(PostingBlock.objects.filter(kb_id=document.kb_id).values_list(
            "term", "first_chunk", "last_chunk", "size", "max_tf", "min_length", "fresh", "data"))
        stats = sorted(TermStat.objects.filter(kb_id=document.kb_id).values_list("term", "df", "max_tf", "min_length"))
        record = IndexedDocument.objects.filter(document_id=document.pk).values(
            "chunk_count", "total_length", "terms", "chunk_ids").get()
    return [(*b[:-1], bytes(b[-1])) for b in blocks], stats, record


def _chunks(tenant, document):
    with tenant_scope(tenant):
        return list(Chunk.objects.filter(document=document).order_by("ordinal"))


def test_later_batches_embed_in_the_thread_and_give_the_same_vectors_and_postings(tenant_a, kb, small_batches,
                                                                                    embed_calls):
    tenant = tenant_a.tenant
    document = make_document(tenant, kb, name="guide.md", data=TEXT)
    assert pipeline.run_document(document_id=document.pk) == "ready"
    chunks = _chunks(tenant, document)
    assert len(chunks) > 6 and len(embed_calls["threads"]) == -(-len(chunks) // 2)
    assert embed_calls["threads"][0] == threading.current_thread().name  # nothing to overlap with yet
    assert all(name.startswith("embed-ahead") for name in embed_calls["threads"][1:])
    assert not any(t.name.startswith("embed-ahead") for t in threading.enumerate())  # no thread outlives the run
    embedder = get_embedder(kb.embedding_model)
    with tenant_scope(tenant):
        document.refresh_from_db()
    expected = embedder.embed_documents([chunks[-1].text if not chunks[-1].heading_path else
                                         f"{chunks[-1].heading_path}\n{chunks[-1].text}"])[0]
    assert np.allclose(np.asarray(chunks[-1].embedding), expected, atol=1e-5)

    # The postings from the terms analysed ahead equal those analysed from the stored chunks.
    ahead = _index(tenant, document)
    search.postings_index_document(tenant=tenant, document=document)
    assert _index(tenant, document) == ahead


def test_terms_analysed_ahead_are_used_only_where_they_still_match(tenant_a, kb, small_batches):
    tenant = tenant_a.tenant
    document = make_document(tenant, kb, name="guide.md", data=TEXT)
    assert pipeline.run_document(document_id=document.pk) == "ready"
    expected = _index(tenant, document)
    chunks = _chunks(tenant, document)
    stale = search.ChunkTerms(kb=kb, document_id=document.pk, title="an older title")
    wrong = search.ChunkTerms(kb=kb, document_id=document.pk, title=document.title)
    for chunk in chunks:
        stale.add(ordinal=chunk.ordinal, heading_path=chunk.heading_path, text=chunk.text)
        wrong.add(ordinal=chunk.ordinal, heading_path=chunk.heading_path, text="other words entirely")
    for terms in (stale, wrong):
        search.postings_index_document(tenant=tenant, document=document, terms=terms)
        assert _index(tenant, document) == expected


@pytest.mark.parametrize("retryable", [True, False])
def test_an_error_in_the_embedding_thread_ends_the_run_cleanly_and_a_resume_adds_no_duplicates(
        tenant_a, kb, small_batches, embed_calls, retryable):
    tenant = tenant_a.tenant
    document = make_document(tenant, kb, name="guide.md", data=TEXT)
    embed_calls["fail_at"], embed_calls["error"] = 3, EmbeddingError("model server busy", retryable=retryable)

    outcome = pipeline.run_document(document_id=document.pk)

    assert embed_calls["threads"][2].startswith("embed-ahead")  # the failing call ran ahead, in the thread
    assert not any(t.name.startswith("embed-ahead") for t in threading.enumerate())
    with tenant_scope(tenant):
        document.refresh_from_db()
    assert [c.ordinal for c in _chunks(tenant, document)] == [0, 1, 2, 3]  # the batches before it, stored
    if not retryable:
        assert outcome == "failed" and document.status == Document.Status.FAILED
        assert document.error == "model server busy"
        return
    assert outcome == "deferred" and document.status == Document.Status.QUEUED
    embed_calls["fail_at"], embed_calls["texts"] = None, 0
    assert pipeline.run_document(document_id=document.pk, force=True) == "ready"
    chunks = _chunks(tenant, document)
    with tenant_scope(tenant):
        document.refresh_from_db()
    assert [c.ordinal for c in chunks] == list(range(document.chunks_total))
    assert embed_calls["texts"] == len(chunks) - 4  # resumed: only the missing chunks
    assert _index(tenant, document)[2]["chunk_ids"] == [c.pk for c in chunks]


def test_a_billed_model_is_never_called_from_the_thread(tenant_a, kb, small_batches, embed_calls, monkeypatch):
    monkeypatch.setattr(type(get_embedder("use-multilingual")), "billed", True)
    document = make_document(tenant_a.tenant, kb, name="guide.md", data=TEXT)
    assert pipeline.run_document(document_id=document.pk) == "ready"
    assert len(embed_calls["threads"]) > 2
    assert set(embed_calls["threads"]) == {threading.current_thread().name}
