"""The gateway against fake Ollama servers: streaming, usage, retries, cooldown, timeouts, fallbacks, policy,
slots and queueing, strategies. Billing is observed at its service boundary (`no_billing`) except in the ledger
test at the end."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import async_to_sync

from accounts.models import Tenant
from billing.errors import QuotaExceeded
from billing.types import Usage, UsageContext
from llm import gateway, state
from llm.localserver import free_port
from llm.registry import PoolSpec, ServerSpec, register_pool, unregister_pool
from llm.tokens import count_message_tokens, count_tokens
from llm.types import (
    ChatRequest,
    ChatResult,
    GenerationParams,
    ModelUnavailable,
    PolicyViolation,
    StreamInterrupted,
)
from tests.support.ollama_fake import prompt_tokens

MESSAGES = [{"role": "user", "content": "hello there gateway"}]
ANY = Tenant(name="any", slug="any", data_policy="any")
LOCAL_ONLY = Tenant(name="local", slug="local", data_policy="local_only")


def context() -> UsageContext:
    return UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex)


def request(**kwargs) -> ChatRequest:
    return ChatRequest(messages=list(kwargs.pop("messages", MESSAGES)), **kwargs)


def ask(target: str, *, tenant=ANY, fallbacks=None, **kwargs) -> ChatResult:
    return gateway.chat_sync(tenant=tenant, target=target, request=request(**kwargs), usage=context(),
                             fallbacks=fallbacks)


def run(coro_fn):
    """Run an async test body in a fresh loop, closing the gateway's clients after (as chat_sync does)."""

    async def body():
        try:
            return await coro_fn()
        finally:
            await gateway.aclose_clients()

    return async_to_sync(body, force_new_loop=True)()


def collect(target: str, *, tenant=ANY, fallbacks=None, **kwargs) -> tuple[list[str], ChatResult | None,
                                                                          Exception | None]:
    async def go():
        parts, result, error = [], None, None
        try:
            async for item in gateway.chat_stream(tenant=tenant, target=target, request=request(**kwargs),
                                                  usage=context(), fallbacks=fallbacks):
                if isinstance(item, str):
                    parts.append(item)
                else:
                    result = item
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            error = exc
        return parts, result, error

    return run(go)


def inflight(sid: str) -> int:
    return state.server_snapshot(sid)["inflight"]


# --- streaming and usage --------------------------------------------------------------------------------------

def test_stream_yields_deltas_then_a_result_with_the_reported_usage(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(reply_tokens=5)
    fake_pool("p", [fake])
    parts, result, error = collect("p/fake")
    assert error is None
    assert parts == ["w0", " w1", " w2", " w3", " w4"]
    assert result.text == "w0 w1 w2 w3 w4"
    assert result.usage == Usage(input_tokens=prompt_tokens(MESSAGES), output_tokens=5, estimated=False)
    assert (result.provider, result.model, result.server, result.target) == ("ollama", "fake", "p-0", "p/fake")
    assert result.ttft_ms is not None and result.duration_ms >= result.ttft_ms
    assert result.is_local and result.attempts == 1 and result.finish_reason == "stop"
    [record] = no_billing["record"]
    assert record["usage"] == result.usage and record["provider"] == "ollama" and record["server"] == "p-0"
    assert record["fallback_from"] == "" and no_billing["release"] == []
    [reserve] = no_billing["reserve"]
    assert reserve["max_input_tokens"] == count_message_tokens(MESSAGES) and reserve["model"] == "fake"


def test_usage_is_counted_offline_and_marked_estimated_when_the_server_reports_none(fake_ollama, fake_pool,
                                                                                   no_billing):
    fake_pool("p", [fake_ollama(reply_tokens=6, report_usage=False)])
    result = ask("p/fake")
    assert result.usage.estimated is True
    assert result.usage.output_tokens == count_tokens(result.text) > 0
    assert result.usage.input_tokens == count_message_tokens(MESSAGES)
    assert no_billing["record"][0]["usage"].estimated is True


def test_max_tokens_reaches_ollama_as_num_predict(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(reply_tokens=10)
    fake_pool("p", [fake])
    result = ask("p/fake", params=GenerationParams(max_tokens=3, top_k=5, temperature=0.2))
    assert result.usage.output_tokens == 3 and result.finish_reason == "length"
    # num_ctx: the model's window the gateway asks Ollama for (the fake's 32768, capped at OLLAMA_MAX_CONTEXT).
    assert fake.stats()["last_body"]["options"] == {"num_predict": 3, "top_k": 5, "temperature": 0.2,
                                                    "num_ctx": 8192}
    assert result.ignored_params == []


def test_openai_kind_streams_with_include_usage_and_reports_ignored_parameters(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(reply_tokens=4)
    fake_pool("oa", [fake], kind="openai", dialect="generic")
    result = ask("oa/fake", params=GenerationParams(max_tokens=3, top_k=5))
    body = fake.stats()["last_body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 3 and "top_k" not in body
    assert result.ignored_params == ["top_k"]
    assert result.usage == Usage(input_tokens=prompt_tokens(MESSAGES), output_tokens=3)
    assert result.provider == "local"  # a self-hosted OpenAI-compatible server: billed as local


def test_openai_cached_prompt_tokens_are_reported(fake_ollama, fake_pool, no_billing):
    fake_pool("oa", [fake_ollama(cached_tokens=2)], kind="openai", dialect="openai")
    result = ask("oa/fake")
    assert result.usage.cached_input_tokens == 2 and result.usage.input_tokens == prompt_tokens(MESSAGES)
    assert no_billing["record"][0]["usage"].cached_input_tokens == 2


def test_json_schema_output_through_ollama_format(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama()
    fake_pool("p", [fake])
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    result = ask("p/fake", json_schema=schema)
    assert json.loads(result.text) == {"answer": "fake"}
    assert fake.stats()["last_body"]["format"] == schema


def test_json_schema_output_through_openai_response_format(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama()
    fake_pool("oa", [fake], kind="openai", dialect="openai")
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    result = ask("oa/fake", json_schema=schema)
    assert json.loads(result.text) == {"answer": "fake"}
    sent = fake.stats()["last_body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema


def test_invalid_parameters_are_refused_before_any_call(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama()
    fake_pool("p", [fake])
    with pytest.raises(Exception) as caught:
        ask("p/fake", params=GenerationParams(temperature=9))
    assert caught.value.status == 400 and "temperature" in caught.value.fields
    assert fake.stats()["requests"] == 0 and no_billing["reserve"] == []


# --- failures, retries, cooldown, timeouts --------------------------------------------------------------------

def test_a_failure_before_the_first_token_moves_the_request_to_another_server(fake_ollama, fake_pool, no_billing):
    first, second = fake_ollama(), fake_ollama()
    fake_pool("p", [first, second], strategy="round_robin")
    first.fail("http500", times=1)
    parts, result, error = collect("p/fake")
    assert error is None and result.attempts == 2 and result.server == "p-1"
    assert first.stats()["failed"] == 1 and second.stats()["completed"] == 1
    assert len(no_billing["record"]) == 1 and no_billing["release"] == []
    assert parts == ["w0", " w1", " w2", " w3", " w4", " w5", " w6", " w7"]  # nothing from the failed server


def test_a_refused_connection_cools_the_server_down_at_once(fake_ollama, fake_pool, no_billing):
    first, second = fake_ollama(), fake_ollama()
    register = fake_pool("p", [first, second], strategy="round_robin")
    first.fail("refuse")
    results = [ask(f"{register}/fake") for _ in range(4)]
    assert all(r.server == "p-1" for r in results)
    from llm.registry import resolve_pool

    snapshot = state.server_snapshot(resolve_pool("p").servers[0].sid)
    assert snapshot["cooldown_s"] > 0 and "unreachable" in snapshot["errors"][0]["msg"]
    assert second.stats()["completed"] == 4


def test_repeated_errors_cool_a_lone_server_down_and_then_fail_fast(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama()
    fake_pool("p", [fake])
    fake.fail("http500")
    for _ in range(2):
        with pytest.raises(ModelUnavailable) as caught:
            ask("p/fake")
        assert "HTTP 500" in caught.value.message
    with pytest.raises(ModelUnavailable) as caught:
        ask("p/fake")
    assert "cooling down" in caught.value.message
    assert fake.stats()["requests"] == 2  # the third call never reached it
    assert len(no_billing["release"]) == 3 and no_billing["record"] == []


def test_no_first_token_in_time_is_a_failure_that_moves_on(fake_ollama, fake_pool, no_billing):
    stalled, healthy = fake_ollama(), fake_ollama()
    fake_pool("p", [stalled, healthy], strategy="round_robin", first_token_timeout_s=0.3)
    stalled.fail("stall")
    result = ask("p/fake")
    assert result.server == "p-1" and result.attempts == 2
    fake_pool("lone", [stalled], first_token_timeout_s=0.3)
    with pytest.raises(ModelUnavailable) as caught:
        ask("lone/fake")
    assert "no first token within 0.3s" in caught.value.message


def test_a_stream_that_goes_idle_after_the_first_token_is_interrupted(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(stall_after=2)
    fake_pool("p", [fake], idle_timeout_s=0.3)
    fake.fail("stall")
    parts, result, error = collect("p/fake")
    assert isinstance(error, StreamInterrupted) and "idle for 0.3s" in error.message
    assert parts == ["w0", " w1"] and result is None
    [record] = no_billing["record"]
    assert record["usage"].estimated and record["usage"].output_tokens == count_tokens("w0 w1")


def test_a_server_dying_mid_stream_ends_the_stream_with_the_partial_text_billed(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(die_after=3)
    register = fake_pool("p", [fake])
    fake.fail("die")
    parts, result, error = collect(f"{register}/fake")
    assert isinstance(error, StreamInterrupted) and "cut off" in error.message
    assert parts == ["w0", " w1", " w2"]
    [record] = no_billing["record"]
    assert record["usage"] == Usage(input_tokens=count_message_tokens(MESSAGES),
                                    output_tokens=count_tokens("w0 w1 w2"), estimated=True)
    assert no_billing["release"] == []
    from llm.registry import resolve_pool

    assert inflight(resolve_pool("p").servers[0].sid) == 0


def test_a_consumer_that_stops_reading_frees_the_slot_and_bills_what_ran(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(reply_tokens=50, token_rate=100)
    fake_pool("p", [fake])

    async def read_two_then_leave():
        stream = gateway.chat_stream(tenant=ANY, target="p/fake", request=request(), usage=context())
        got = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()
        return got

    assert run(read_two_then_leave) == ["w0", " w1"]
    from llm.registry import resolve_pool

    assert inflight(resolve_pool("p").servers[0].sid) == 0
    [record] = no_billing["record"]
    assert record["usage"].estimated and record["usage"].output_tokens == count_tokens("w0 w1")


# --- fallbacks and bad configuration --------------------------------------------------------------------------

def test_a_fallback_answers_when_the_pool_is_exhausted_and_is_recorded(fake_ollama, fake_pool, no_billing):
    down, backup = fake_ollama(), fake_ollama()
    fake_pool("main", [down])
    fake_pool("backup", [backup])
    down.fail("refuse")
    result = ask("main/fake", fallbacks=["backup/fake"])
    assert result.target == "backup/fake" and result.fallback_from == "main/fake"
    assert [r["model"] for r in no_billing["reserve"]] == ["fake", "fake"]
    assert len(no_billing["release"]) == 1  # main's reservation came back
    assert no_billing["record"][0]["fallback_from"] == "main/fake"


@pytest.mark.django_db
def test_when_everything_fails_the_error_names_each_target(fake_ollama, fake_pool, no_billing):
    a, b = fake_ollama(), fake_ollama()
    fake_pool("a", [a])
    fake_pool("b", [b])
    a.fail("refuse")
    b.fail("http500")
    with pytest.raises(ModelUnavailable) as caught:
        ask("a/fake", fallbacks=["b/fake", "nowhere/x"])
    message = caught.value.message
    assert "a/fake" in message and "b/fake" in message and "no model pool or provider named 'nowhere'" in message
    assert caught.value.status == 503


@pytest.mark.django_db
def test_unknown_pool_and_malformed_target_fail_clearly(no_billing):
    with pytest.raises(ModelUnavailable, match="no model pool or provider named 'ghost'"):
        ask("ghost/model")
    with pytest.raises(ModelUnavailable, match="expected '<pool>/<model>'"):
        ask("just-a-name")
    assert no_billing["reserve"] == []


def test_unknown_model_on_an_ollama_pool_lists_what_is_there(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(models=["llama3.2:latest", "qwen2.5:7b"])
    fake_pool("p", [fake])
    with pytest.raises(ModelUnavailable) as caught:
        ask("p/mistral")
    assert "'mistral'" in caught.value.message and "llama3.2:latest" in caught.value.message
    # The first request learnt the server's models from its 404; the next one is refused without a call.
    calls = fake.stats()["by_path"].get("/api/chat", 0)
    with pytest.raises(ModelUnavailable):
        ask("p/mistral")
    assert fake.stats()["by_path"].get("/api/chat", 0) == calls


def test_a_server_without_the_model_is_skipped_once_its_models_are_known(fake_ollama, fake_pool, no_billing):
    lacking, serving = fake_ollama(models=["other:latest"]), fake_ollama()
    fake_pool("p", [lacking, serving], strategy="round_robin")
    results = [ask("p/fake") for _ in range(4)]
    assert all(r.server == "p-1" for r in results)
    assert lacking.stats()["by_path"].get("/api/chat", 0) <= 1


def test_a_wrong_api_key_is_a_clear_error_that_never_shows_the_key(fake_ollama, no_billing, fake_pool):
    fake = fake_ollama(api_key="the-right-key")
    register_pool(PoolSpec(name="keyed", kind="openai", dialect="generic", source="static",
                           servers=(ServerSpec(sid=f"keyed:{uuid.uuid4().hex}", name="keyed-0",
                                               base_url=fake.url + "/v1", api_key="sk-wrong-secret-123"),)))
    try:
        with pytest.raises(ModelUnavailable) as caught:
            ask("keyed/fake")
    finally:
        unregister_pool("keyed")
    assert "rejected the API key (HTTP 401)" in caught.value.message
    assert "sk-wrong" not in caught.value.message and "secret" not in caught.value.message


def test_an_unreachable_url_fails_fast_and_clearly(no_billing):
    port = free_port()  # nothing listens there
    register_pool(PoolSpec(name="gone", kind="ollama", source="static", connect_timeout_s=1.0,
                           servers=(ServerSpec(sid=f"gone:{uuid.uuid4().hex}", name="gone-0",
                                               base_url=f"http://127.0.0.1:{port}"),)))
    try:
        with pytest.raises(ModelUnavailable) as caught:
            ask("gone/fake")
    finally:
        unregister_pool("gone")
    assert "unreachable" in caught.value.message


def test_quota_exceeded_stops_the_call_before_anything_is_sent(fake_ollama, fake_pool, monkeypatch):
    fake = fake_ollama()
    fake_pool("p", [fake])

    def over_quota(**kwargs):
        raise QuotaExceeded("monthly token allowance used up", limit="monthly_tokens")

    monkeypatch.setattr("billing.services.quota_reserve", over_quota)
    with pytest.raises(QuotaExceeded):
        ask("p/fake")
    assert fake.stats()["requests"] == 0


# --- data policy ----------------------------------------------------------------------------------------------

def test_local_only_tenants_are_never_sent_to_a_cloud_provider(fake_ollama, fake_pool, no_billing):
    cloud = fake_ollama()
    fake_pool("cloud", [cloud], kind="openai", is_local=False)
    with pytest.raises(PolicyViolation) as caught:
        ask("cloud/fake", tenant=LOCAL_ONLY)
    assert caught.value.status == 403 and "local models only" in caught.value.message
    with pytest.raises(PolicyViolation):
        gateway.embed_sync(tenant=LOCAL_ONLY, target="cloud/fake-embed", texts=["secret text"], usage=context())
    assert cloud.stats()["requests"] == 0 and no_billing["reserve"] == []
    assert ask("cloud/fake", tenant=ANY).text  # the same target is fine for other teams


def test_a_cloud_fallback_is_not_used_for_a_local_only_tenant(fake_ollama, fake_pool, no_billing):
    local, cloud = fake_ollama(), fake_ollama()
    fake_pool("local", [local])
    fake_pool("cloud", [cloud], kind="openai", is_local=False)
    assert ask("local/fake", tenant=LOCAL_ONLY, fallbacks=["cloud/fake"]).target == "local/fake"
    local.fail("refuse")
    with pytest.raises(PolicyViolation) as caught:
        ask("local/fake", tenant=LOCAL_ONLY, fallbacks=["cloud/fake"])
    assert "cloud/fake" in caught.value.message and "local models only" in caught.value.message
    assert cloud.stats()["requests"] == 0


# --- slots, queueing, strategies ------------------------------------------------------------------------------

def test_a_single_slot_server_never_runs_two_generations_at_once(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(token_rate=200, reply_tokens=5, slots=4)  # the fake could take 4...
    fake_pool("p", [fake], slots=1)  # ...but the pool says 1

    async def six():
        return await asyncio.gather(*(gateway.chat(tenant=ANY, target="p/fake", request=request(), usage=context())
                                      for _ in range(6)))

    results = run(six)
    assert len(results) == 6 and all(r.usage.output_tokens == 5 for r in results)
    assert fake.stats()["max_active"] == 1


def test_waiting_for_a_slot_is_bounded_by_the_queue_timeout(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(token_rate=20, reply_tokens=10)  # half a second per answer
    fake_pool("p", [fake], queue_timeout_s=0.1)

    async def two():
        return await asyncio.gather(*(gateway.chat(tenant=ANY, target="p/fake", request=request(), usage=context())
                                      for _ in range(2)), return_exceptions=True)

    outcomes = run(two)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1 and "no free server in pool 'p' within 0.1s" in errors[0].message


def test_a_full_queue_refuses_at_once(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(token_rate=20, reply_tokens=10)
    fake_pool("p", [fake], max_queue=1)

    async def three():
        return await asyncio.gather(*(gateway.chat(tenant=ANY, target="p/fake", request=request(), usage=context())
                                      for _ in range(3)), return_exceptions=True)

    outcomes = run(three)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1 and "overloaded" in errors[0].message


def test_round_robin_takes_turns(fake_ollama, fake_pool, no_billing):
    fakes = [fake_ollama() for _ in range(3)]
    fake_pool("p", fakes, strategy="round_robin")
    servers = [ask("p/fake").server for _ in range(6)]
    assert servers == ["p-0", "p-1", "p-2", "p-0", "p-1", "p-2"]


def test_random_spreads_requests(fake_ollama, fake_pool, no_billing):
    fakes = [fake_ollama() for _ in range(3)]
    fake_pool("p", fakes, strategy="random")
    used = {ask("p/fake").server for _ in range(30)}
    assert len(used) >= 2


def test_least_busy_sends_a_concurrent_request_to_the_idle_server(fake_ollama, fake_pool, no_billing):
    busy, idle = fake_ollama(token_rate=50, reply_tokens=10, slots=2), fake_ollama(token_rate=50, reply_tokens=10,
                                                                                 slots=2)
    fake_pool("p", [busy, idle], strategy="least_busy")

    async def two_overlapping():
        first = asyncio.create_task(gateway.chat(tenant=ANY, target="p/fake", request=request(), usage=context()))
        await asyncio.sleep(0.05)
        second = await gateway.chat(tenant=ANY, target="p/fake", request=request(), usage=context())
        return (await first).server, second.server

    assert run(two_overlapping) == ("p-0", "p-1")


@pytest.mark.django_db
def test_least_busy_prefers_a_server_that_has_the_model_loaded(fake_ollama, fake_pool, no_billing):
    from llm.services import health_check_all

    cold, warm = fake_ollama(loaded=[]), fake_ollama(loaded=["fake:latest"])
    fake_pool("p", [cold, warm], strategy="least_busy")
    report = health_check_all(pool_names={"p"})
    assert [line["error"] for line in report] == ["", ""]
    assert {ask("p/fake").server for _ in range(3)} == {"p-1"}


def test_a_lease_left_by_a_dead_process_expires(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama()
    fake_pool("p", [fake], queue_timeout_s=0.2)
    from llm.registry import resolve_pool

    sid = resolve_pool("p").servers[0].sid
    redis = state.sync_redis()
    redis.zadd(state.key("l", sid), {"leaked-live": 9e15})  # a live lease from another process: slot taken
    with pytest.raises(ModelUnavailable, match="within 0.2s"):
        ask("p/fake")
    redis.zadd(state.key("l", sid), {"leaked-live": 1.0})  # ...whose process died: the lease ran out
    assert ask("p/fake").text


# --- embeddings -----------------------------------------------------------------------------------------------

def test_embeddings_through_ollama_with_exact_usage_in_batches(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(embed_dim=4)
    fake_pool("p", [fake])
    texts = [f"text number {i}" for i in range(70)]
    result = gateway.embed_sync(tenant=ANY, target="p/fake-embed", texts=texts, usage=context())
    assert len(result.vectors) == 70 and all(len(v) == 4 for v in result.vectors)
    assert result.usage == Usage(input_tokens=fake.stats()["prompt_tokens"])
    assert fake.stats()["by_path"]["/api/embed"] == 2  # 64 + 6
    [record] = no_billing["record"]
    assert record["usage"] == result.usage and record["model"] == "fake-embed"


def test_embeddings_through_openai(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(embed_dim=3)
    fake_pool("oa", [fake], kind="openai")
    result = gateway.embed_sync(tenant=ANY, target="oa/fake-embed", texts=["a b", "c"], usage=context())
    assert len(result.vectors) == 2 and result.usage.input_tokens == fake.stats()["prompt_tokens"] == 5


def test_embedding_with_a_failing_server_is_a_clear_error(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama()
    fake_pool("p", [fake])
    fake.fail("http500")
    with pytest.raises(ModelUnavailable, match="embedding with 'p/fake-embed' failed"):
        gateway.embed_sync(tenant=ANY, target="p/fake-embed", texts=["x"], usage=context())
    assert no_billing["record"] == [] and len(no_billing["release"]) == 1


# --- the real ledger ------------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_each_call_lands_once_on_the_usage_ledger_with_the_servers_counts(tenant_a, fake_ollama, fake_pool):
    from accounts.tenancy import tenant_scope
    from billing.models import UsageRecord

    fake = fake_ollama(reply_tokens=7)
    fake_pool("p", [fake])
    ctx = UsageContext(stage="answer", idempotency_key="chat-1", user_id=tenant_a.owner.pk)
    result = gateway.chat_sync(tenant=tenant_a.tenant, target="p/fake", request=request(), usage=ctx)
    with tenant_scope(tenant_a.tenant):
        [row] = UsageRecord.objects.all()
    assert (row.input_tokens, row.output_tokens, row.estimated) == (fake.stats()["prompt_tokens"], 7, False)
    assert (row.provider, row.model, row.server, row.stage) == ("ollama", "fake", "p-0", "answer")
    assert result.usage.output_tokens == 7


def test_redis_trouble_is_a_clear_gateway_error_not_a_crash(fake_ollama, fake_pool, no_billing, settings):
    fake = fake_ollama()
    fake_pool("p", [fake])
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(ModelUnavailable, match="cannot reach Redis"):
        ask("p/fake")
    assert fake.stats()["requests"] == 0 and len(no_billing["release"]) == 1
