"""Heartbeats of a claimed ingest run (config.jobs) and the job sweep's stale limit: a live run is never taken
for dead however long one step takes, a dead one is found within a minute, and a swept run writes nothing."""

import threading
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection

from accounts.tenancy import system_scope, tenant_scope
from config import jobs
from knowledge import pipeline
from knowledge.embeddings import get_embedder
from knowledge.models import Chunk, Document
from knowledge.search.analysis import analyzer_for
from tests.factories.knowledge import make_document, make_kb

SENTENCE = "사내 문서 검색은 질문에 맞는 단락을 찾아 출처와 함께 보여 줍니다. Retrieval finds passages for questions."


def long_text(paragraphs=10):
    return "\n\n".join(f"Section {i}. " + " ".join([SENTENCE] * 5) for i in range(paragraphs))


@pytest.fixture
def no_send(monkeypatch):
    """The sweep dispatches without sending task messages."""
    monkeypatch.setattr(pipeline, "send_document", lambda *args: None)


def _doc(pk):
    with system_scope():
        return Document.all_tenants.get(pk=pk)


def test_default_settings_find_a_dead_run_within_a_minute():
    stale = django_settings.JOBS_STALE_AFTER_SECONDS
    every = django_settings.CELERY_BEAT_SCHEDULE["jobs-sweep"]["schedule"]
    assert stale + every <= 60
    # Several beats fit in the stale limit: one late beat does not make a live run look dead.
    assert stale >= django_settings.JOBS_HEARTBEAT_SECONDS * 3


class Sweeper(threading.Thread):
    """The beat task, run often in the background while the test runs a document in the foreground."""

    def __init__(self, every: float):
        super().__init__(daemon=True)
        self.every = every
        self.reports = []
        self.halt = threading.Event()

    def run(self):
        try:
            while not self.halt.wait(self.every):
                self.reports.append(jobs.sweep_kind(pipeline.INGEST_JOB))
        finally:
            connection.close()

    def stop(self):
        self.halt.set()
        self.join(timeout=30)
        return sum(r["requeued"] + r["failed"] for r in self.reports)


def _slow_batches(monkeypatch, seconds, batches):
    """The first `batches` embedding calls each take `seconds` (a slow model or a rate-limited API)."""
    embedder_cls = type(get_embedder("use-multilingual"))
    original = embedder_cls.embed_documents
    calls = {"n": 0}

    def slow(self, texts, **kwargs):
        calls["n"] += 1
        if calls["n"] <= batches:
            time.sleep(seconds)
        return original(self, texts, **kwargs)

    monkeypatch.setattr(embedder_cls, "embed_documents", slow)
    return calls


@pytest.mark.django_db(transaction=True)
def test_an_embedding_batch_longer_than_the_stale_limit_does_not_make_a_live_run_look_dead(
        tenant_a, monkeypatch, settings, no_send):
    settings.JOBS_HEARTBEAT_SECONDS = 0.2
    settings.JOBS_STALE_AFTER_SECONDS = 1
    settings.INGEST_EMBED_BATCH = 4
    kb = make_kb(tenant_a.tenant, name="Slow")
    document = make_document(tenant_a.tenant, kb, name="slow.txt", data=long_text())
    _slow_batches(monkeypatch, seconds=2.5, batches=2)  # each batch is 2.5x the stale limit
    # Loading Kiwi holds the GIL (and so the beat thread) for seconds, once per worker process: not this test's
    # subject, and far below the real stale limit (JOBS_STALE_AFTER_SECONDS, 30).
    analyzer_for().tokens(SENTENCE)
    sweeper = Sweeper(every=0.25)
    sweeper.start()
    try:
        outcome = pipeline.run_document(document_id=document.pk, force=True)
    finally:
        swept = sweeper.stop()
    assert swept == 0, sweeper.reports
    assert len(sweeper.reports) >= 10
    assert outcome == "ready"
    finished = _doc(document.pk)
    assert finished.status == Document.Status.READY and finished.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_a_run_swept_by_the_job_sweep_stops_beating_and_writes_nothing(tenant_a, monkeypatch, settings, no_send):
    settings.JOBS_HEARTBEAT_SECONDS = 0.1
    settings.INGEST_EMBED_BATCH = 4
    kb = make_kb(tenant_a.tenant, name="Swept")
    document = make_document(tenant_a.tenant, kb, name="swept.txt", data=long_text())
    original = pipeline.Run._store_batch
    seen = {}

    def swept_before_the_second_batch_is_stored(self, *args, **kwargs):
        # Between batches, in the run's own thread (the next batch may be embedding ahead in another one).
        seen["n"] = seen.get("n", 0) + 1
        if seen["n"] == 2:
            # The sweep decides this run is dead (as after a long network partition) and hands it on.
            settings.JOBS_STALE_AFTER_SECONDS = 0
            time.sleep(0.01)  # the last beat is in the past by the database clock
            assert jobs.sweep_kind(pipeline.INGEST_JOB)["requeued"] == 1
            seen["chunks_at_sweep"] = _chunks(tenant_a.tenant, document)
            time.sleep(0.5)  # several beat intervals: a beat now must not revive the claim
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.Run, "_store_batch", swept_before_the_second_batch_is_stored)
    assert pipeline.run_document(document_id=document.pk, force=True) == "superseded"
    after = _doc(document.pk)
    assert after.status == Document.Status.QUEUED and after.claim_token == ""
    assert _chunks(tenant_a.tenant, document) == seen["chunks_at_sweep"] == 4  # the second batch was not written

    monkeypatch.setattr(pipeline.Run, "_store_batch", original)
    assert pipeline.run_document(document_id=document.pk, force=True) == "ready"
    finished = _doc(document.pk)
    with tenant_scope(tenant_a.tenant):
        ordinals = list(Chunk.objects.filter(document_id=document.pk).order_by("ordinal")
                        .values_list("ordinal", flat=True))
    assert ordinals == list(range(finished.chunks_total))


def _chunks(tenant, document):
    with tenant_scope(tenant):
        return Chunk.objects.filter(document_id=document.pk).count()


@pytest.mark.django_db(transaction=True)
def test_heartbeat_refreshes_only_the_claim_it_belongs_to(tenant_a):
    kb = make_kb(tenant_a.tenant, name="Beats")
    document = make_document(tenant_a.tenant, kb, name="beats.txt")
    with tenant_scope(tenant_a.tenant):
        token = pipeline.claim(document_id=document.pk, version=None, force=True)
    with system_scope():
        Document.all_tenants.filter(pk=document.pk).update(heartbeat_at="2000-01-01T00:00:00Z")
    with tenant_scope(tenant_a.tenant):
        beat = jobs.Job(Document, document.pk, token, version=document.version)
        assert beat.beat() is True
        assert _doc(document.pk).heartbeat_at.year > 2000
        stranger = jobs.Job(Document, document.pk, "someone-else", version=document.version)
        with system_scope():
            Document.all_tenants.filter(pk=document.pk).update(heartbeat_at="2000-01-01T00:00:00Z")
        assert stranger.beat() is False
        assert _doc(document.pk).heartbeat_at.year == 2000


@pytest.mark.django_db(transaction=True)
def test_the_beat_thread_keeps_time_while_the_run_is_busy(tenant_a, settings):
    kb = make_kb(tenant_a.tenant, name="Thread")
    document = make_document(tenant_a.tenant, kb, name="thread.txt")
    with tenant_scope(tenant_a.tenant):
        token = pipeline.claim(document_id=document.pk, version=None, force=True)
        with jobs.heartbeat(jobs.Job(Document, document.pk, token, version=document.version),
                            interval=0.1) as beats:
            time.sleep(0.65)  # the "run" does one long thing and writes nothing itself
        assert 4 <= beats.beats <= 8 and not beats.lost
        first = _doc(document.pk).heartbeat_at
        time.sleep(0.3)
        assert _doc(document.pk).heartbeat_at == first  # the thread stopped with the run
