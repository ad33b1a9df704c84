"""The one job engine (config/jobs.py): a claim taken once, writes by the owner only, heartbeats from one thread
per process, and the beat's stale sweep of every kind of job (ingest runs, evaluation runs, chat answers)."""

import threading
import time
from datetime import timedelta

import pytest
from django.db.models import Q
from django.utils import timezone

from accounts.tenancy import system_scope, tenant_scope
from chat import streams
from chat.answer_jobs import MSG_INTERRUPTED as ANSWER_INTERRUPTED
from chat.models import Message
from config import jobs
from knowledge import pipeline
from knowledge.models import Document
from knowledge.search.evaluation.runs import MSG_INTERRUPTED as EVAL_INTERRUPTED
from knowledge.search.models import EvalRun
from tests.factories.chat import AnswerFactory
from tests.factories.knowledge import make_document, make_kb
from tests.factories.search import make_search_kb
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # heartbeats write from a thread of their own

LONG_AGO = timezone.now() - timedelta(hours=1)


@pytest.fixture
def no_send(monkeypatch):
    """The ingest sweep dispatches without sending task messages."""
    monkeypatch.setattr(pipeline, "send_document", lambda *args: None)


@pytest.fixture
def document(tenant_a):
    return make_document(tenant_a.tenant, make_kb(tenant_a.tenant, name="Jobs"))


def _doc(pk) -> Document:
    with system_scope():
        return Document.all_tenants.get(pk=pk)


def _claim(tenant, document) -> str:
    with tenant_scope(tenant):
        return jobs.claim(Document.objects.filter(pk=document.pk, status=Document.Status.QUEUED),
                          status=Document.Status.PARSING)


def _beat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "job-heartbeats"]


# ---------------------------------------------------------------- registry and beat

def test_one_beat_entry_sweeps_every_kind(settings):
    from config.celery import app

    assert {"ingest", "evaluation", "answer"} <= set(jobs._kinds)
    sweeps = [entry for entry in settings.CELERY_BEAT_SCHEDULE.values() if entry["task"] == "jobs.sweep"]
    assert sweeps == [settings.CELERY_BEAT_SCHEDULE["jobs-sweep"]]
    assert sweeps[0]["schedule"] == settings.JOBS_SWEEP_SECONDS and sweeps[0]["options"]["queue"] == "maintenance"
    assert not [name for name in settings.CELERY_BEAT_SCHEDULE if "watchdog" in name]  # the ingest-only one is gone
    app.loader.import_default_modules()
    assert "jobs.sweep" in app.tasks


# ---------------------------------------------------------------- claim and owner-only writes

def test_a_job_is_claimed_once_with_a_heartbeat(tenant_a, document):
    token = _claim(tenant_a.tenant, document)
    assert token and _claim(tenant_a.tenant, document) is None  # a second delivery finds nothing to take
    claimed = _doc(document.pk)
    assert claimed.status == Document.Status.PARSING and claimed.claim_token == token
    assert claimed.heartbeat_at is not None


def test_only_the_owner_writes(tenant_a, document):
    token = _claim(tenant_a.tenant, document)
    with tenant_scope(tenant_a.tenant):
        owner = jobs.Job(Document, document.pk, token)
        stranger = jobs.Job(Document, document.pk, "not-the-claim")
        assert stranger.update(error="stranger was here") is False
        assert _doc(document.pk).error == ""
        assert owner.update(error="owner was here") is True
        assert _doc(document.pk).error == "owner was here"
        assert owner.update(claim_token="") is True  # the job is handed on (swept, superseded)
        assert owner.update(error="too late") is False and owner.beat() is False
    assert _doc(document.pk).error == "owner was here"


# ---------------------------------------------------------------- heartbeats

def test_one_thread_beats_every_held_job_and_ends_with_them(tenant_a):
    kb = make_kb(tenant_a.tenant, name="Beats")
    first, second = (make_document(tenant_a.tenant, kb, name=f"{n}.txt") for n in ("first", "second"))
    held = [jobs.Job(Document, d.pk, _claim(tenant_a.tenant, d)) for d in (first, second)]
    with jobs.heartbeat(held[0], interval=0.1) as one, jobs.heartbeat(held[1], interval=0.1) as two:
        time.sleep(0.65)  # the runs do one long thing and write nothing themselves
        assert len(_beat_threads()) == 1
    assert 4 <= one.beats <= 8 and 4 <= two.beats <= 8 and not one.lost and not two.lost
    wait_for(lambda: not _beat_threads(), timeout=5, what="the beat thread to end with the last job")
    stamps = [_doc(d.pk).heartbeat_at for d in (first, second)]
    time.sleep(0.3)
    assert [_doc(d.pk).heartbeat_at for d in (first, second)] == stamps  # no beat after the block


def test_a_beat_that_finds_the_job_taken_stops_beating_it(tenant_a, document):
    token = _claim(tenant_a.tenant, document)
    with jobs.heartbeat(jobs.Job(Document, document.pk, token), interval=0.05) as beats:
        wait_for(lambda: beats.beats >= 2, timeout=5)
        with system_scope():
            Document.all_tenants.filter(pk=document.pk).update(claim_token="the-sweep-took-it",
                                                               heartbeat_at=LONG_AGO)
        wait_for(lambda: beats.lost, timeout=5, what="the lost claim to be noticed")
        sent = beats.beats
        time.sleep(0.3)
        assert beats.beats == sent  # no more beats for a job the run lost
    assert _doc(document.pk).heartbeat_at == LONG_AGO  # and none revived it


# ---------------------------------------------------------------- the stale sweep, each kind

def _running_document(tenant, kb, name, heartbeat_at):
    document = make_document(tenant, kb, name=f"{name}.txt")
    with system_scope():
        Document.all_tenants.filter(pk=document.pk).update(status=Document.Status.EMBEDDING, attempts=1,
                                                           claim_token=name, heartbeat_at=heartbeat_at)
    return document


def _running_eval(tenant, kb, token, heartbeat_at):
    with tenant_scope(tenant):
        return EvalRun.objects.create(tenant=tenant, kb=kb, status=EvalRun.Status.RUNNING, claim_token=token,
                                      heartbeat_at=heartbeat_at, started_at=heartbeat_at)


def _running_answer(tenant, run_id, heartbeat_at):
    with tenant_scope(tenant):
        answer = AnswerFactory(tenant=tenant, status=Message.Status.RUNNING, content="", run_id=run_id,
                               heartbeat_at=heartbeat_at)
    streams.delete(answer.pk)
    streams.publish(answer.pk, "token", {"text": f"half of {run_id}"})
    return answer


def test_the_sweep_ends_dead_jobs_of_every_kind_and_leaves_live_ones(tenant_a, no_send):
    tenant, now = tenant_a.tenant, timezone.now()
    kb = make_kb(tenant, name="Sweep")
    dead_doc, live_doc = (_running_document(tenant, kb, n, at) for n, at in (("dead", LONG_AGO), ("live", now)))
    search_kb = make_search_kb(tenant, name="Sweep evals")
    dead_eval, live_eval = (_running_eval(tenant, search_kb, n, at) for n, at in (("dead", LONG_AGO), ("live", now)))
    dead_answer, live_answer = (_running_answer(tenant, n, at) for n, at in (("dead", LONG_AGO), ("live", now)))

    reports = jobs.sweep_task.apply().get()  # what beat runs

    assert reports["ingest"]["requeued"] == 1 and reports["evaluation"]["failed"] == 1
    assert reports["answer"]["failed"] == 1
    with system_scope():
        doc = {d.pk: d for d in Document.all_tenants.filter(pk__in=[dead_doc.pk, live_doc.pk])}
        runs = {r.pk: r for r in EvalRun.all_tenants.filter(pk__in=[dead_eval.pk, live_eval.pk])}
        answers = {m.pk: m for m in Message.all_tenants.filter(pk__in=[dead_answer.pk, live_answer.pk])}
    # Ingest: requeued for the next worker, the dead run's claim void.
    assert doc[dead_doc.pk].status == Document.Status.QUEUED and doc[dead_doc.pk].claim_token == ""
    assert doc[live_doc.pk].status == Document.Status.EMBEDDING and doc[live_doc.pk].claim_token == "live"
    # Evaluation: failed with the reason, without waiting for the KB's next run.
    assert runs[dead_eval.pk].status == EvalRun.Status.FAILED and runs[dead_eval.pk].error == EVAL_INTERRUPTED
    assert runs[dead_eval.pk].claim_token == "" and runs[dead_eval.pk].finished_at is not None
    assert runs[live_eval.pk].status == EvalRun.Status.RUNNING
    # Chat: failed with the text streamed so far, and the stream ends with the error.
    dead = answers[dead_answer.pk]
    assert dead.status == Message.Status.FAILED and dead.error_code == "interrupted"
    assert dead.error == ANSWER_INTERRUPTED and dead.content == "half of dead" and dead.run_id == ""
    _id, kind, data = streams.history(dead_answer.pk)[-1]
    assert (kind, data) == ("error", {"code": "interrupted", "message": ANSWER_INTERRUPTED, "status": 502})
    assert answers[live_answer.pk].status == Message.Status.RUNNING
    assert [kind for _id, kind, _data in streams.history(live_answer.pk)] == ["token"]


def test_the_sweep_fails_work_no_worker_took(tenant_a, settings):
    settings.CHAT_QUEUE_TIMEOUT_S = 60
    settings.EVAL_QUEUE_TIMEOUT_S = 60
    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        waiting_answer, fresh_answer = AnswerFactory.create_batch(2, tenant=tenant, status=Message.Status.QUEUED,
                                                                  content="")
        Message.objects.filter(pk=waiting_answer.pk).update(created_at=LONG_AGO)
        kb = make_search_kb(tenant, name="Queued evals")
        waiting_run = EvalRun.objects.create(tenant=tenant, kb=kb, status=EvalRun.Status.QUEUED)
        EvalRun.objects.filter(pk=waiting_run.pk).update(created_at=LONG_AGO)
        fresh_run = EvalRun.objects.create(tenant=tenant, kb=kb, status=EvalRun.Status.QUEUED)
    reports = jobs.sweep()
    assert reports["answer"]["not_taken"] == 1 and reports["evaluation"]["not_taken"] == 1
    with system_scope():
        assert Message.all_tenants.get(pk=waiting_answer.pk).error_code == "no_worker"
        assert Message.all_tenants.get(pk=fresh_answer.pk).status == Message.Status.QUEUED
        assert "No worker took" in EvalRun.all_tenants.get(pk=waiting_run.pk).error
        assert EvalRun.all_tenants.get(pk=fresh_run.pk).status == EvalRun.Status.QUEUED
    _id, kind, data = streams.history(waiting_answer.pk)[-1]
    assert kind == "error" and data["code"] == "no_worker"


def test_one_kind_failing_does_not_stop_the_sweep_of_the_others(tenant_a, monkeypatch, no_send):
    def broken(rows, now):
        raise ConnectionError("redis is away")

    broken_kind = jobs.Kind(name="broken", model=Document, running=Q(status__in=pipeline.IN_PROGRESS),
                            on_stale=broken)
    monkeypatch.setattr(jobs, "_kinds", {"broken": broken_kind, **jobs._kinds})  # swept first
    dead = _running_document(tenant_a.tenant, make_kb(tenant_a.tenant, name="Broken"), "dead", LONG_AGO)
    reports = jobs.sweep()
    assert reports["broken"] == {"error": "ConnectionError"}
    assert reports["ingest"]["requeued"] == 1 and _doc(dead.pk).status == Document.Status.QUEUED


@pytest.mark.parametrize(("module", "label"), [("knowledge.pipeline", "ingest"), ("knowledge.vectors", "vector upgrade")])
def test_a_broker_outage_at_dispatch_never_fails_the_caller(monkeypatch, caplog, module, label):
    """Dispatch runs after a commit (an upload, a fill request): the job sweep sends the work later."""
    import importlib

    jobs_module = importlib.import_module(module)

    def broker_down():
        raise ConnectionError("redis is down")

    monkeypatch.setattr(jobs_module, "dispatch", broker_down)
    with caplog.at_level("WARNING", logger="config.jobs"):
        assert jobs_module.request_dispatch() is None
    assert f"{label} dispatch failed; the job sweep will retry" in caplog.text
