"""Integration: a real `celery -A config worker` process on the test database, including a worker killed
(SIGKILL, whole process group) in the middle of a document and a second worker finishing it exactly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from accounts.tenancy import system_scope, tenant_scope
from config import jobs
from knowledge import pipeline
from knowledge.models import Chunk, Document
from tests.factories.knowledge import make_kb
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "지식 베이스 문서는 청크로 나뉘어 임베딩됩니다. Each chunk gets a vector for semantic search."


def _database_url() -> str:
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    def __init__(self, log_path: Path, **env_overrides):
        self.log_path = log_path
        env = os.environ.copy()
        env.update({
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": django_settings.REDIS_URL,
            "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in env_overrides.items()},
        })
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "ingest,maintenance", "-c", "1",
             "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
             "-n", f"ingest-test-{os.getpid()}-{time.monotonic_ns()}@%h"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self):
        """Like a machine losing power: the whole process group, no warm shutdown."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def clean_queues():
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.delete("ingest", "maintenance", "unacked", "unacked_index", "unacked_mutex")
    yield
    client.delete("ingest", "maintenance", "unacked", "unacked_index", "unacked_mutex")


@pytest.fixture
def start_worker(tmp_path, clean_queues):
    workers = []

    def start(**env):
        worker = Worker(tmp_path / f"worker{len(workers)}.log", **env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def _doc(pk):
    with system_scope():
        return Document.all_tenants.get(pk=pk)


def test_upload_through_api_is_processed_by_a_real_worker(start_worker, tenant_a, api_a):
    start_worker()
    kb = make_kb(tenant_a.tenant, name="Worker KB")
    text = "\n\n".join(" ".join([SENTENCE] * 4) for _ in range(6))
    response = api_a.post(f"/api/v1/knowledge-bases/{kb.pk}/documents",
                          {"file": SimpleUploadedFile("guide.txt", text.encode("utf-16"))}, format="multipart")
    assert response.status_code == 201
    document_id = response.json()["id"]
    wait_for(lambda: _doc(document_id).status in ("ready", "failed"), timeout=120)
    detail = api_a.get(f"/api/v1/documents/{document_id}").json()
    assert detail["status"] == "ready", detail["error"]
    assert detail["progress"]["chunks_embedded"] == detail["progress"]["chunks_total"] > 1
    with tenant_scope(tenant_a.tenant):
        assert Chunk.objects.filter(document_id=document_id, embedding__isnull=False).count() == \
            detail["progress"]["chunks_total"]


def test_worker_killed_mid_document_is_found_within_a_minute_and_finished_exactly(start_worker, tenant_a, api_a):
    """The default heartbeat and stale limit: no test shortcut decides the run is dead."""
    first = start_worker(INGEST_EMBED_BATCH=2)
    kb = make_kb(tenant_a.tenant, name="Crash KB")
    text = "\n\n".join(f"Paragraph {i}. " + " ".join([SENTENCE] * 6) for i in range(120))
    response = api_a.post(f"/api/v1/knowledge-bases/{kb.pk}/documents",
                          {"file": SimpleUploadedFile("long.md", text.encode())}, format="multipart")
    document_id = response.json()["id"]

    def partly_embedded():
        document = _doc(document_id)
        return document.status == "embedding" and 0 < document.chunks_embedded < document.chunks_total - 20
    wait_for(partly_embedded, interval=0.02, timeout=120)
    first.kill()
    killed_at = time.monotonic()

    crashed = _doc(document_id)
    assert crashed.status == "embedding"
    with system_scope():
        stored = Chunk.all_tenants.filter(document_id=document_id).count()
    assert 0 < stored < crashed.chunks_total

    start_worker(INGEST_EMBED_BATCH=8)
    # The beat task, every second here (every JOBS_SWEEP_SECONDS in production): it leaves the run alone
    # while its last heartbeats are recent, then hands the document to the new worker.
    stale = django_settings.JOBS_STALE_AFTER_SECONDS
    every = django_settings.CELERY_BEAT_SCHEDULE["jobs-sweep"]["schedule"]
    requeued_after = None
    while time.monotonic() - killed_at < 60:
        report = jobs.sweep_kind(pipeline.INGEST_JOB)
        if report["requeued"]:
            requeued_after = time.monotonic() - killed_at
            assert report["requeued"] == 1 and report["dispatched"] >= 1
            break
        time.sleep(1)
    assert requeued_after is not None, "the dead run was not found within a minute"
    assert stale - django_settings.JOBS_HEARTBEAT_SECONDS - 1 <= requeued_after <= stale + 5
    wait_for(lambda: _doc(document_id).status in ("ready", "failed"), timeout=120)
    finished = _doc(document_id)
    assert finished.status == "ready", finished.error
    assert time.monotonic() - killed_at <= 60 + every  # found by a beat task that runs every `every` seconds
    assert finished.attempts == 2
    with system_scope():
        ordinals = list(Chunk.all_tenants.filter(document_id=document_id).order_by("ordinal")
                        .values_list("ordinal", flat=True))
        missing_vectors = Chunk.all_tenants.filter(document_id=document_id, embedding__isnull=True).count()
    assert ordinals == list(range(finished.chunks_total))
    assert missing_vectors == 0
    assert finished.chunks_embedded == finished.chunks_total


def test_fair_dispatch_with_a_real_worker(start_worker, tenant_a, tenant_b, settings):
    """Tenant A floods the queue; tenant B's single upload is done long before A's backlog."""
    from knowledge import services

    settings.INGEST_DISPATCH_WINDOW = 2
    kb_a, kb_b = make_kb(tenant_a.tenant, name="Flood"), make_kb(tenant_b.tenant, name="Small")
    flood = [services.document_create_from_text(tenant=tenant_a.tenant, kb=kb_a, title=f"a{i}",
                                                text=f"{SENTENCE} flood {i}")[0].pk for i in range(30)]
    late = services.document_create_from_text(tenant=tenant_b.tenant, kb=kb_b, title="b", text=f"{SENTENCE} b")[0].pk
    start_worker(INGEST_DISPATCH_WINDOW=2)
    wait_for(lambda: _doc(late).status == "ready", timeout=120)
    with system_scope():
        done_a = Document.all_tenants.filter(pk__in=flood, status="ready").count()
    assert done_a < 10  # B did not wait for A's 30 files
    wait_for(lambda: _doc(flood[-1]).status == "ready", timeout=120)
