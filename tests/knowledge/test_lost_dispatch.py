"""A task message the broker lost (a Redis restart, a deleted queue) holds a slot of the global dispatch window:
the job sweep finds it gone from Redis within seconds and sends it again, while a message that merely waits in
the queue behind busy workers is never sent twice. The last two tests run a real worker on the real broker."""

import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone

from accounts.tenancy import system_scope
from config import broker, jobs
from knowledge import pipeline, services
from knowledge.models import Document
from tests.factories.knowledge import make_document, make_kb
from tests.knowledge.test_worker import SENTENCE, Worker
from tests.support.waiting import wait_for


def _doc(pk):
    with system_scope():
        return Document.all_tenants.get(pk=pk)


def _dispatched(document, seconds_ago):
    with system_scope():
        Document.all_tenants.filter(pk=document.pk).update(dispatched_at=timezone.now() - timedelta(seconds=seconds_ago))


@pytest.fixture
def sent(monkeypatch):
    """The sweep's dispatches, recorded instead of sent."""
    calls = []
    monkeypatch.setattr(pipeline, "send_document", lambda doc_id, version: calls.append(doc_id))
    monkeypatch.setattr(pipeline, "LOST_CONFIRM_SECONDS", 0)
    return calls


@pytest.fixture
def broker_holds(monkeypatch):
    """Make the broker answer with `held` (a broker.Held, or None for one that cannot be looked into)."""
    def hold(held):
        monkeypatch.setattr(broker, "held_messages", lambda queue: held)
    return hold


def test_message_the_broker_no_longer_holds_is_sent_again_after_seconds(tenant_a, sent, broker_holds):
    document = make_document(tenant_a.tenant, make_kb(tenant_a.tenant))
    broker_holds(broker.Held())
    _dispatched(document, pipeline.LOST_CHECK_AFTER_SECONDS - 2)  # just sent: may not be in the broker yet
    assert jobs.sweep_kind(pipeline.INGEST_JOB)["lost"] == 0
    _dispatched(document, pipeline.LOST_CHECK_AFTER_SECONDS + 1)
    assert jobs.sweep_kind(pipeline.INGEST_JOB) == {"requeued": 0, "failed": 0, "lost": 1, "dispatched": 1}
    assert sent == [document.pk]
    assert _doc(document.pk).dispatched_at is not None  # in flight again, with a new message


def test_message_waiting_in_the_queue_is_never_sent_twice(tenant_a, sent, broker_holds, settings):
    document = make_document(tenant_a.tenant, make_kb(tenant_a.tenant))
    broker_holds(broker.Held(waiting=frozenset({pipeline.message_id(document.pk, document.version)})))
    _dispatched(document, settings.INGEST_LOST_AFTER_SECONDS * 3)  # however long it waits
    assert jobs.sweep_kind(pipeline.INGEST_JOB)["lost"] == 0
    assert sent == []


def test_message_a_worker_took_but_never_started_is_sent_again_after_the_long_cutoff(tenant_a, sent, broker_holds,
                                                                                      settings):
    document = make_document(tenant_a.tenant, make_kb(tenant_a.tenant))
    task_id = pipeline.message_id(document.pk, document.version)
    _dispatched(document, settings.INGEST_LOST_AFTER_SECONDS * 2)
    broker_holds(broker.Held(taken={task_id: time.time() - 60}))  # a worker is about to start it
    assert jobs.sweep_kind(pipeline.INGEST_JOB)["lost"] == 0
    broker_holds(broker.Held(taken={task_id: time.time() - settings.INGEST_LOST_AFTER_SECONDS - 5}))
    assert jobs.sweep_kind(pipeline.INGEST_JOB)["lost"] == 1
    assert sent == [document.pk]


def test_broker_that_cannot_be_looked_into_keeps_the_long_cutoff(tenant_a, sent, broker_holds, settings):
    document = make_document(tenant_a.tenant, make_kb(tenant_a.tenant))
    broker_holds(None)
    _dispatched(document, settings.INGEST_LOST_AFTER_SECONDS - 30)
    assert jobs.sweep_kind(pipeline.INGEST_JOB)["lost"] == 0
    _dispatched(document, settings.INGEST_LOST_AFTER_SECONDS + 1)
    assert jobs.sweep_kind(pipeline.INGEST_JOB)["lost"] == 1


# ---------------------------------------------------------------- a real worker on the real Redis broker

QUEUES = ("ingest", "maintenance", "unacked", "unacked_index", "unacked_mutex")


@pytest.fixture
def real_broker(tmp_path):
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.delete(*QUEUES)
    workers = []

    def start(**env):
        workers.append(Worker(tmp_path / f"worker{len(workers)}.log", **env))
        return workers[-1]

    yield client, start
    for worker in workers:
        worker.stop()
    client.delete(*QUEUES)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_deleted_message_is_sent_again_and_the_document_ingested_within_half_a_minute(tenant_a, real_broker):
    client, start_worker = real_broker
    kb = make_kb(tenant_a.tenant)
    document, _ = services.document_create_from_text(tenant=tenant_a.tenant, kb=kb, title="lost", text=SENTENCE)
    task_id = pipeline.message_id(document.pk, document.version)
    assert task_id in broker.held_messages("ingest").waiting
    client.delete("ingest")  # the broker lost it (e.g. restarted without persistence)
    dispatched_at = _doc(document.pk).dispatched_at
    start_worker()

    every = 1.0  # the beat's sweep, every JOBS_SWEEP_SECONDS (15) in production
    while not (report := jobs.sweep_kind(pipeline.INGEST_JOB))["lost"]:
        assert timezone.now() - dispatched_at < timedelta(seconds=pipeline.LOST_CHECK_AFTER_SECONDS + 10)
        time.sleep(every)
    noticed_after = (timezone.now() - dispatched_at).total_seconds()
    assert report == {"requeued": 0, "failed": 0, "lost": 1, "dispatched": 1}
    assert pipeline.LOST_CHECK_AFTER_SECONDS <= noticed_after <= pipeline.LOST_CHECK_AFTER_SECONDS + every + 2
    # With the production sweep period it is noticed within 10 + 15 s: well under a minute.
    assert pipeline.LOST_CHECK_AFTER_SECONDS + django_settings.JOBS_SWEEP_SECONDS <= 30
    wait_for(lambda: _doc(document.pk).status in ("ready", "failed"), timeout=60, what="the document")
    assert _doc(document.pk).status == "ready", _doc(document.pk).error


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_message_waiting_behind_a_busy_worker_is_not_sent_again(tenant_a, real_broker, settings, monkeypatch):
    client, start_worker = real_broker
    settings.INGEST_DISPATCH_WINDOW = 2
    # Even with both cutoffs at a second, a message the broker holds is left alone.
    settings.INGEST_LOST_AFTER_SECONDS = 1
    monkeypatch.setattr(pipeline, "LOST_CHECK_AFTER_SECONDS", 1)
    start_worker(INGEST_DISPATCH_WINDOW=2, INGEST_EMBED_BATCH=1)  # one process: one document at a time
    kb = make_kb(tenant_a.tenant)
    long_text = "\n\n".join(f"Paragraph {i}. " + " ".join([SENTENCE] * 6) for i in range(24))
    busy, _ = services.document_create_from_text(tenant=tenant_a.tenant, kb=kb, title="long", text=long_text)
    wait_for(lambda: _doc(busy.pk).status == "embedding", timeout=60, what="the long document to start")
    waiting, _ = services.document_create_from_text(tenant=tenant_a.tenant, kb=kb, title="short", text=SENTENCE)
    task_id = pipeline.message_id(waiting.pk, waiting.version)
    time.sleep(2)
    assert _doc(busy.pk).status == "embedding", "the long document must still hold the worker"
    report = jobs.sweep_kind(pipeline.INGEST_JOB)
    assert report["lost"] == 0
    assert client.llen("ingest") == 1
    held = broker.held_messages("ingest")
    assert task_id in held.waiting
    assert pipeline.message_id(busy.pk, busy.version) in held.taken  # the running one, not yet acknowledged
    wait_for(lambda: _doc(waiting.pk).status == "ready", timeout=180, what="the waiting document")
    assert _doc(busy.pk).status == "ready"
