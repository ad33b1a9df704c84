"""A pool that stays up, against the fake Ollama: client errors never count against a server, a busy single-slot
server probed during a long answer is busy (not down) and requests queue for it, and a server that really dies is
still cooled down and failed over from. The same cases on the real model: test_pool_llama.py."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from accounts.models import Tenant
from billing.types import UsageContext
from llm import gateway, registry, services, state
from llm.providers import ProviderError
from llm.types import ChatRequest, ContextOverflow, GenerationParams, ModelUnavailable
from tests.support.ollama_fake import FakeOllamaProcess
from tests.support.threads import in_background

ANY = Tenant(name="any", slug="any", data_policy="any")


def ask(target: str, text: str = "hello there", **params):
    return gateway.chat_sync(tenant=ANY, target=target,
                             request=ChatRequest(messages=[{"role": "user", "content": text}],
                                                 params=GenerationParams(**params)),
                             usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))


def snapshot(pool: str, index: int = 0) -> dict:
    return state.server_snapshot(registry.resolve_pool(pool).servers[index].sid)


def wait_until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --- client errors --------------------------------------------------------------------------------------------

def test_client_errors_never_count_against_a_lone_server_or_start_a_cooldown(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(context_length=64, api_key="right")
    fake_pool("p", [fake])
    fake_pool("wrongkey", [fake], kind="openai", api_key="wrong")
    for _ in range(3):
        with pytest.raises(ContextOverflow):
            ask("p/fake", "word " * 200)
        with pytest.raises(ModelUnavailable, match="rejected the API key"):
            ask("wrongkey/fake")
        with pytest.raises(ModelUnavailable, match="not installed|not found"):
            ask("p/no-such-model")
    for pool in ("p", "wrongkey"):
        snap = snapshot(pool)
        assert snap["cooldown_s"] == 0 and snap["consecutive_failures"] == 0 and snap["fail_total"] == 0
    started = time.monotonic()
    assert ask("p/fake").text
    assert time.monotonic() - started < 2


def test_server_errors_still_cool_a_lone_server_down(fake_ollama, fake_pool, no_billing):
    """The rule above is about the request's fault only: two HTTP 500s in a row still mean the server."""
    fake = fake_ollama()
    fake_pool("p", [fake])
    fake.fail("http500")
    for _ in range(2):
        with pytest.raises(ModelUnavailable, match="HTTP 500"):
            ask("p/fake")
    assert snapshot("p")["cooldown_s"] > 0


# --- busy is not down -----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_busy_single_slot_server_probed_during_a_long_answer_stays_healthy_and_queues(fake_ollama, fake_pool,
                                                                                        no_billing, settings):
    settings.LLM_PROBE_TIMEOUT_S = 0.3
    # Like llama-cpp-python's server: one slot, and its metadata endpoints wait while it generates.
    fake = fake_ollama(slots=1, token_rate=20, reply_tokens=30, block_probes_while_busy=True)  # 1.5 s per answer
    fake_pool("p", [fake], queue_timeout_s=10)
    long_answer, first = in_background(lambda: ask("p/fake"))
    wait_until(lambda: fake.stats()["active"] == 1)
    report = services.health_check_all(pool_names={"p"})
    assert [(line["outcome"], line["error"]) for line in report] == [("busy", "")]
    assert fake.stats()["probes_waited"] >= 1  # the probe really found it unable to answer
    snap = snapshot("p")
    assert snap["cooldown_s"] == 0 and snap["fail_total"] == 0 and snap["consecutive_failures"] == 0
    # The next question waits in the queue for the slot instead of failing at once.
    started = time.monotonic()
    second = ask("p/fake")
    long_answer.join(10)
    assert "error" not in first and first["result"].text and second.text
    assert time.monotonic() - started > 0.3  # it really waited for the first answer
    assert fake.stats()["max_active"] == 1


@pytest.mark.django_db
def test_a_silent_server_with_nothing_in_flight_is_a_failed_check(fake_ollama, fake_pool, settings):
    """Busy means busy for us: a probe that times out while the gateway has no request on the server counts."""
    settings.LLM_PROBE_TIMEOUT_S = 0.3
    fake = fake_ollama(slots=1, token_rate=20, reply_tokens=30, block_probes_while_busy=True)
    fake_pool("p", [fake])
    # Someone else's request, not the gateway's: no lease in Redis.
    outside, _box = in_background(lambda: httpx.post(fake.url + "/api/chat", timeout=10, json={
        "model": "fake", "stream": False, "messages": [{"role": "user", "content": "hi"}]}))
    wait_until(lambda: fake.stats()["active"] == 1)
    report = services.health_check_all(pool_names={"p"})
    outside.join(10)
    assert report[0]["outcome"] == "failed" and "did not answer the health check" in report[0]["error"]
    assert snapshot("p")["consecutive_failures"] == 1 and snapshot("p")["cooldown_s"] == 0


def test_every_slot_busy_for_the_whole_queue_timeout_says_so(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(slots=1, token_rate=20, reply_tokens=20)  # one second per answer
    fake_pool("p", [fake], queue_timeout_s=0.3)
    thread, first = in_background(lambda: ask("p/fake"))
    wait_until(lambda: fake.stats()["active"] == 1)
    with pytest.raises(ModelUnavailable) as caught:
        ask("p/fake")
    thread.join(10)
    assert "within 0.3s" in caught.value.message and "busy" in caught.value.message
    assert "cooling down" not in caught.value.message
    assert snapshot("p")["cooldown_s"] == 0 and first["result"].text


# --- a server that really dies --------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_server_that_dies_is_cooled_down_and_failed_over_from(fake_pool, no_billing):
    with FakeOllamaProcess(token_rate=500) as doomed, FakeOllamaProcess(token_rate=500) as survivor:
        fake_pool("p", [doomed, survivor], strategy="round_robin")
        assert {ask("p/fake").server for _ in range(2)} == {"p-0", "p-1"}
        doomed.kill()  # SIGKILL: connections refused from now on
        results = [ask("p/fake") for _ in range(4)]
        assert all(r.server == "p-1" for r in results)
        assert snapshot("p", 0)["cooldown_s"] > 0 and "unreachable" in snapshot("p", 0)["errors"][0]["msg"]
        report = {line["server"]: line for line in services.health_check_all(pool_names={"p"})}
        assert report["p-0"]["outcome"] == "down" and report["p-1"]["outcome"] == "ok"
        assert snapshot("p", 0)["cooldown_s"] > 0 and snapshot("p", 1)["cooldown_s"] == 0


@pytest.mark.django_db
def test_a_lone_server_that_dies_fails_clearly_and_returns_after_a_passing_check(fake_pool, no_billing):
    with FakeOllamaProcess(token_rate=500) as server:
        port = server.port
        fake_pool("p", [server])
        assert ask("p/fake").text
        server.kill()
        with pytest.raises(ModelUnavailable, match="unreachable"):
            ask("p/fake")
        with pytest.raises(ModelUnavailable, match="cooling down"):
            ask("p/fake")
    with FakeOllamaProcess(port=port, token_rate=500):  # restarted on the same address
        report = services.health_check_all(pool_names={"p"})
        assert report[0]["outcome"] == "ok" and snapshot("p")["cooldown_s"] == 0
        assert ask("p/fake").text


# --- how a health check reads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("error,inflight,outcome", [
    (None, 0, "ok"),
    (ProviderError("s is unreachable", kind="connect"), 1, "down"),
    (ProviderError("s timed out", kind="timeout"), 1, "busy"),
    (TimeoutError(), 2, "busy"),
    (ProviderError("s timed out", kind="timeout"), 0, "failed"),
    (ProviderError.from_status(503, "loading model", server="s"), 0, "busy"),
    (ProviderError.from_status(429, "slow down", server="s"), 0, "busy"),
    (ProviderError.from_status(401, "", server="s"), 0, "client"),
    (ProviderError.from_status(404, "no such route", server="s"), 0, "client"),
    (ProviderError.from_status(500, "boom", server="s"), 0, "failed"),
])
def test_a_health_check_tells_busy_and_client_errors_from_down(error, inflight, outcome):
    assert services.probe_outcome(error, inflight=inflight) == outcome


@pytest.mark.django_db
def test_a_check_the_server_refuses_as_a_client_error_never_cools_it_down(fake_ollama, fake_pool):
    fake = fake_ollama(api_key="right")
    fake_pool("wrongkey", [fake], kind="openai", api_key="wrong")
    for _ in range(3):
        [line] = services.health_check_all(pool_names={"wrongkey"})
        assert line["outcome"] == "client" and "rejected the API key" in line["error"]
    snap = snapshot("wrongkey")
    assert snap["cooldown_s"] == 0 and snap["fail_total"] == 0 and "rejected the API key" in snap["check_error"]


# --- the demo server's command --------------------------------------------------------------------------------

def test_the_demo_server_runs_with_one_thread_per_core_and_the_configured_context(settings):
    import os

    from llm.localserver import server_command

    def flag(command, name):
        return command[command.index(name) + 1]

    settings.LOCAL_LLM_THREADS = 0
    settings.LOCAL_LLM_CONTEXT = 4096
    command = server_command(port=1234, model_path="/m.gguf")
    assert flag(command, "--threads") == str(os.cpu_count()) and flag(command, "--n-ctx") == "4096"
    settings.LOCAL_LLM_THREADS = 3
    settings.LOCAL_LLM_CONTEXT = 8192
    command = server_command(port=1234, model_path="/m.gguf")
    assert flag(command, "--threads") == "3" and flag(command, "--n-ctx") == "8192"
