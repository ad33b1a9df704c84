"""Integration: an evaluation run started through the API is scored by a real `celery -A config worker` process
(the task is found by the app's autodiscovery and routed to the default queue); a run whose worker process dies
is ended by the job sweep, without waiting for the KB's next run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connections

from accounts.tenancy import system_scope
from config import jobs
from knowledge.search.evaluation import scoring
from knowledge.search.evaluation.runs import MSG_INTERRUPTED, eval_run_execute
from knowledge.search.evaluation.services import eval_question_create, eval_run_start
from knowledge.search.models import EvalRun
from tests.factories.search import make_indexed_document, make_search_kb
from tests.knowledge.test_worker import _database_url
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[3]
QUEUE = "default"


@pytest.fixture
def default_worker(tmp_path):
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    broker.delete(QUEUE, "unacked", "unacked_index", "unacked_mutex")
    log_path = tmp_path / "worker.log"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": _database_url(),
           "REDIS_URL": django_settings.REDIS_URL, "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
           "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", QUEUE, "-c", "1", "-P", "prefork",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
             "-n", f"eval-test-{os.getpid()}-{time.monotonic_ns()}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(lambda: proc.poll() is not None or b" ready." in log_path.read_bytes(), timeout=90, interval=0.2)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        proc.log_path = log_path
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        broker.delete(QUEUE, "unacked", "unacked_index", "unacked_mutex")


def _run(pk) -> EvalRun:
    with system_scope():
        return EvalRun.all_tenants.get(pk=pk)


def test_eval_run_started_through_the_api_is_scored_by_a_real_worker(default_worker, tenant_a, api_a):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, name="Worker eval", retrieval={"mode": "bm25"})
    topics = [("Refunds", "Refunds are possible within 30 days.", "refund 30 days"),
              ("Shipping", "Orders ship within two business days.", "orders ship business days"),
              ("Security", "Passwords rotate every 90 days.", "password rotate")]
    for title, text, question in topics:
        doc = make_indexed_document(tenant, kb, [text], title=title)
        eval_question_create(tenant=tenant, kb=kb, text=question, document_ids=[doc.pk])

    response = api_a.post(f"/api/v1/knowledge-bases/{kb.pk}/eval-runs", {"k": 3}, format="json")
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    assert response.json()["status"] == "queued"

    wait_for(lambda: _run(run_id).status in ("done", "failed"), timeout=120, interval=0.1)
    run = _run(run_id)
    assert run.status == "done", run.error or default_worker.log_path.read_text()[-3000:]
    assert run.progress == run.question_count == 3 and run.attempts == 1
    assert run.ndcg_at_10 == pytest.approx(1.0) and run.recall_at_k == pytest.approx(1.0)
    body = api_a.get(f"/api/v1/eval-runs/{run_id}").json()
    assert body["status"] == "done" and body["progress"]["percent"] == 100 and len(body["per_question"]) == 3
    assert "knowledge.search.run_evaluation" in default_worker.log_path.read_text()


def test_a_run_whose_worker_died_is_failed_by_the_sweep_without_waiting_for_the_next_run(tenant_a, settings,
                                                                                        monkeypatch):
    """The worker is a process forked from this one, its search hanging; then it is SIGKILLed."""
    settings.JOBS_HEARTBEAT_SECONDS = 0.2
    settings.JOBS_STALE_AFTER_SECONDS = stale = 1.5
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, name="Dying eval", retrieval={"mode": "bm25"})
    doc = make_indexed_document(tenant, kb, ["Refunds are possible within 30 days."], title="Refunds")
    eval_question_create(tenant=tenant, kb=kb, text="refund 30 days", document_ids=[doc.pk])
    run = eval_run_start(tenant=tenant, kb=kb, enqueue=False)
    monkeypatch.setattr(scoring, "document_ranking", lambda **kwargs: time.sleep(3600))  # a search that never ends
    connections.close_all()  # the worker opens connections of its own
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            eval_run_execute(tenant=tenant, run_id=run.pk)
        finally:
            os._exit(0)
    try:
        wait_for(lambda: _run(run.pk).status == "running", timeout=30, what="the worker to claim the run")
        time.sleep(3 * stale)  # alive, however long its search takes: its beats keep the run out of the sweep
        assert jobs.sweep()["evaluation"]["failed"] == 0 and _run(run.pk).status == "running"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    killed_at = time.monotonic()
    while not jobs.sweep()["evaluation"]["failed"]:  # what beat runs every JOBS_SWEEP_SECONDS
        assert time.monotonic() - killed_at < stale + 2, "the dead run was not swept"
        time.sleep(0.1)
    failed = _run(run.pk)
    assert failed.status == "failed" and failed.error == MSG_INTERRUPTED and failed.claim_token == ""
    with system_scope():
        assert EvalRun.all_tenants.filter(kb_id=kb.pk).count() == 1  # no next run was needed to end it
