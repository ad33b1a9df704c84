"""`manage.py start_local_llm` keeps the demo model server running: a server that dies is restarted (with
backoff), and meanwhile the gateway says the local model server is down, not that no pool is configured."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command

from accounts.models import Tenant
from billing.types import UsageContext
from llm import conf, gateway, localserver, registry
from llm.localserver import free_port
from llm.types import ChatRequest, ModelUnavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOWN = "the local model server is not responding"


def test_a_local_server_that_is_down_is_not_reported_as_unconfigured(settings, db):
    settings.LOCAL_LLM_URL = ""
    conf.runtime_write(conf.Runtime(source="llamacpp", base_url="http://127.0.0.1:9/v1", model="smollm2",
                                    state="down"))
    conf.forget_cached_runtime()
    with pytest.raises(ModelUnavailable, match=DOWN):
        registry.resolve_pool("local")
    conf.runtime_clear()
    with pytest.raises(ModelUnavailable, match="no model pool or provider named 'local'"):
        registry.resolve_pool("local")  # nothing started at all: still "not configured"


def _runtime(predicate, timeout_s: float = 30.0) -> conf.Runtime:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = conf.runtime_read(max_age_s=0)
        if record is not None and predicate(record):
            return record
        time.sleep(0.05)
    raise AssertionError(f"runtime never matched; last: {conf.runtime_read(max_age_s=0)}")


@pytest.mark.django_db(transaction=True)
def test_start_local_llm_restarts_a_dead_model_server_and_answers_follow_it(settings, monkeypatch, no_billing):
    from llm.management.commands import start_local_llm
    from llm.supervisor import LocalServerSupervisor

    settings.OPENAI_API_KEY = settings.LOCAL_LLM_URL = ""
    settings.OLLAMA_HOSTS = []
    settings.LOCAL_LLM_PORT = free_port()
    monkeypatch.setattr(start_local_llm, "ollama_candidates", lambda: [f"http://127.0.0.1:{free_port()}"])
    monkeypatch.setattr(localserver, "llama_available", lambda: True)
    monkeypatch.setattr(localserver, "gguf_path", lambda: "/models/fake.gguf")
    # The fake model server (no model) instead of llama.cpp: same OpenAI API, starts in a blink.
    config = json.dumps({"models": [f"{conf.LOCAL_MODEL}:latest"], "reply_tokens": 3})
    monkeypatch.setattr(localserver, "server_command", lambda *, port, **_kw: [
        sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r}); from tests.support.ollama_fake import main;"
        " main()", "--port", str(port), "--config", config])
    supervisors = []

    class Watched(LocalServerSupervisor):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "backoff_base_s": 2.0})
            supervisors.append(self)

    monkeypatch.setattr(start_local_llm, "LocalServerSupervisor", Watched)
    out = io.StringIO()
    command = threading.Thread(target=call_command, args=("start_local_llm",), kwargs={"stdout": out}, daemon=True)
    command.start()
    tenant = Tenant(name="t", slug="t")

    async def ask() -> str:
        result = await gateway.chat(tenant=tenant, target=f"local/{conf.LOCAL_MODEL}",
                                    request=ChatRequest(messages=[{"role": "user", "content": "hi"}]),
                                    usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))
        return result.text

    async def scenario():
        try:
            first = await asyncio.to_thread(_runtime, lambda r: r.source == "llamacpp" and not r.down)
            assert await ask()
            supervisor = supervisors[0]
            supervisor.port = free_port()  # its port is taken meanwhile: the restart lands elsewhere
            supervisor.proc.kill()
            await asyncio.to_thread(_runtime, lambda r: r.down)
            with pytest.raises(ModelUnavailable, match=DOWN):
                await ask()
            second = await asyncio.to_thread(_runtime, lambda r: not r.down and r.base_url != first.base_url)
            assert second.base_url == f"http://127.0.0.1:{supervisor.port}/v1"
            assert await ask()  # the same event loop, whose clients knew the old address
        finally:
            await gateway.aclose_clients()

    try:
        async_to_sync(scenario, force_new_loop=True)()
        assert supervisors[0].restarts == 1
        assert "restart 1" in out.getvalue()
    finally:
        if supervisors:
            supervisors[0].stop()
        command.join(30)
    assert not command.is_alive() and conf.runtime_read(max_age_s=0) is None  # it cleans up after itself
    assert supervisors[0].proc.poll() is not None
