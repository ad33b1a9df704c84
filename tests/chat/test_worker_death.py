"""A chat worker killed mid-answer with nobody reading the answer (issue 13, section 2).

Real processes: scripts/run-app's chat worker (read from the script) and Celery beat, on the test database and
Redis, with a fake Ollama streaming a known reply slowly. The answer is asked with no stream reader attached,
so only the job sweep (config.jobs, run by beat on the `maintenance` queue) can end it. A second chat worker is
up from the start, as a supervisor's restart would be, to run the sweep once the first one is gone.
Expected: while the first worker lives, its heartbeats keep the answer out of every sweep however long it runs;
after a SIGKILL of its whole process group, the answer is failed within the stale limit plus one sweep
interval, with the `interrupted` error, the text streamed so far kept, and an `error` event on its stream.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings as django_settings

from accounts.models import Tenant
from accounts.tenancy import system_scope, tenant_scope
from chat import services, streams
from chat.answer_jobs import MSG_INTERRUPTED
from chat.models import AnswerMode, Message
from tests.chat.live import backend_pids, close_new_connections
from tests.chat.run_app import ROOT, database_url, processes, urlsplit_db
from tests.factories.chat import AssistantFactory
from tests.factories.search import make_indexed_document, make_search_kb
from tests.support.ollama_fake import FakeOllamaProcess, reply_words
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPLY_TOKENS = 80
TOKEN_RATE = 4  # tokens/s: the answer would stream for 20 s
HEARTBEAT_S, STALE_S, SWEEP_S = 0.5, 3.0, 1.0
QUEUES = ("chat", "maintenance", "unacked", "unacked_index", "unacked_mutex")


class Process:
    """A process of our own, in a group of its own, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict, logdir):
        self.name, self.log_path = name, logdir / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self):
        """Like a machine losing power: the whole process group, no warm shutdown."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture
def stack(tmp_path, tenant_a):
    """Two chat workers as scripts/run-app starts one, and Celery beat sweeping every SWEEP_S."""
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    broker.delete(*QUEUES)
    before = backend_pids()
    running: dict[str, Process] = {}
    try:
        with FakeOllamaProcess(token_rate=TOKEN_RATE, slots=2, reply_tokens=REPLY_TOKENS,
                               models=["fake:latest"]) as fake:
            env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": database_url(),
                   "REDIS_URL": django_settings.REDIS_URL, "TEST_REDIS_DB": urlsplit_db(django_settings.REDIS_URL),
                   "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL, "PYTHONUNBUFFERED": "1", "OLLAMA_HOSTS": fake.url, "OLLAMA_MODEL": "fake",
                   "LLM_ANSWER_TARGET": "ollama/fake", "JOBS_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
                   "JOBS_STALE_AFTER_SECONDS": str(STALE_S), "JOBS_SWEEP_SECONDS": str(SWEEP_S)}
            (chat,) = [p for p in processes() if "chat" in p.queues]
            for name in ("chat1", "chat2"):
                argv = [*chat.argv]
                argv[argv.index("-n") + 1] = f"{name}-{os.getpid()}@%h"
                running[name] = Process(name, argv, {**env, **chat.env}, tmp_path)
            for process in running.values():
                wait_for(lambda p=process: b" ready." in p.log_path.read_bytes() or p.proc.poll() is not None,
                         timeout=90, interval=0.2, what=f"the {process.name} worker")
                assert process.proc.poll() is None, process.text()[-3000:]
            running["beat"] = Process("beat", [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "info",
                                               "-s", str(tmp_path / "beat-schedule")], env, tmp_path)
            wait_for(lambda: _sweeps_done(running["chat1"]) + _sweeps_done(running["chat2"]), timeout=90,
                     interval=0.2, what="the first sweep from beat")
            yield running
    finally:
        for process in running.values():
            process.stop()
        broker.delete(*QUEUES)
        close_new_connections(before)


@pytest.fixture
def assistant(tenant_a):
    """An assistant answering with the fake model from one indexed document (BM25: no embedding model)."""
    Tenant.objects.filter(pk=tenant_a.tenant.pk).update(plan="unlimited")
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, name="Policies", retrieval={"mode": "bm25"})
    make_indexed_document(tenant, kb, ["Refunds are possible within thirty days of purchase."], title="Refunds")
    with tenant_scope(tenant):
        assistant = AssistantFactory(tenant=tenant, name="Desk", answer_mode=AnswerMode.GENERATIVE,
                                     answer_target="ollama/fake", cheap_target="ollama/fake",
                                     max_tokens=REPLY_TOKENS, retrieval={"mode": "bm25"})
        assistant.knowledge_bases.add(kb)
    return assistant


def _answer(pk) -> Message:
    with system_scope():
        return Message.all_tenants.get(pk=pk)


def _streamed(pk) -> str:
    return "".join(data.get("text", "") for _id, kind, data in streams.history(pk) if kind == "token")


def _sweeps_done(process: Process) -> int:
    return process.text().count("Task jobs.sweep[")  # "received" and "succeeded" lines: twice per sweep


def test_a_chat_worker_killed_mid_answer_with_no_reader_is_failed_by_the_sweep(stack, tenant_a, assistant):
    with tenant_scope(tenant_a.tenant):
        _question, answer = services.question_ask(tenant=tenant_a.tenant, assistant=assistant,
                                                  content="How long do refunds take?", user=tenant_a.owner)
    # Nobody follows the stream: the test only peeks at Redis and the database.
    wait_for(lambda: _answer(answer.pk).status == Message.Status.RUNNING and len(_streamed(answer.pk)) > 0,
             timeout=60, what="the answer to stream")
    (owner,) = [p for name, p in stack.items() if name != "beat" and "Task chat.tasks.generate_answer[" in p.text()]

    # Alive, the worker's heartbeats keep the answer out of every sweep, well past the stale limit.
    sweeps_before = sum(_sweeps_done(p) for name, p in stack.items() if name != "beat")
    time.sleep(STALE_S + 3 * SWEEP_S)
    assert sum(_sweeps_done(p) for name, p in stack.items() if name != "beat") >= sweeps_before + 4
    alive = _answer(answer.pk)
    assert alive.status == Message.Status.RUNNING and alive.heartbeat_at is not None

    owner.kill()
    killed_at = time.monotonic()
    text_at_kill = _streamed(answer.pk)
    expected = "".join(reply_words(REPLY_TOKENS))
    assert text_at_kill and expected.startswith(text_at_kill) and text_at_kill != expected  # cut mid-answer

    wait_for(lambda: _answer(answer.pk).is_final, timeout=30, interval=0.1, what="the sweep to end the answer")
    ended_after = time.monotonic() - killed_at
    assert ended_after <= STALE_S + SWEEP_S + 2  # a late heartbeat at most, then the next sweep
    failed = _answer(answer.pk)
    assert failed.status == Message.Status.FAILED and failed.error_code == "interrupted"
    assert failed.error == MSG_INTERRUPTED
    assert failed.content == text_at_kill and failed.run_id == "" and failed.finished_at is not None
    last_kind, last_data = [(kind, data) for _id, kind, data in streams.history(answer.pk)][-1]
    assert last_kind == "error" and last_data == {"code": "interrupted", "message": MSG_INTERRUPTED, "status": 502}
    survivor = next(p for name, p in stack.items() if name not in ("beat", owner.name))
    assert survivor.proc.poll() is None and "chat: 1 answers whose worker died failed" in survivor.text()
