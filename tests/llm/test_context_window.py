"""Each model's real context window (llm.selectors.model_context_window, llm/context.py), Ollama's num_ctx, and
prompts a provider refuses as too long (llm.types.ContextOverflow): discovered from the fake Ollama's /api/show,
pool overrides (static, environment, admin), the OpenAI table; llama.cpp's /props in test_pool_llama.py."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync

from accounts.models import Tenant
from billing.types import UsageContext
from llm import context, gateway, registry, selectors, state
from llm.models import Pool, PoolServer
from llm.providers.base import ProviderError, context_numbers, is_context_overflow
from llm.types import ChatRequest, ContextOverflow, GenerationParams, InvalidParams
from tests.support.fixtures import pool_spec

ANY = Tenant(name="any", slug="any", data_policy="any")


def ask(target: str, text: str = "hello there", **params):
    return gateway.chat_sync(tenant=ANY, target=target,
                             request=ChatRequest(messages=[{"role": "user", "content": text}],
                                                 params=GenerationParams(**params)),
                             usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))


def stream(target: str, text: str):
    """(deltas, error) of a streamed call."""

    async def go():
        parts = []
        try:
            async for item in gateway.chat_stream(tenant=ANY, target=target,
                                                  request=ChatRequest(messages=[{"role": "user", "content": text}]),
                                                  usage=UsageContext(stage="answer",
                                                                     idempotency_key=uuid.uuid4().hex)):
                if isinstance(item, str):
                    parts.append(item)
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            return parts, exc
        finally:
            await gateway.aclose_clients()
        return parts, None

    return async_to_sync(go, force_new_loop=True)()


@pytest.fixture(autouse=True)
def _fresh_windows():
    context.forget()
    yield
    context.forget()


# --- discovery ------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_ollama_window_is_the_trained_context_capped_and_is_sent_as_num_ctx(fake_ollama, fake_pool, no_billing,
                                                                            settings):
    settings.OLLAMA_MAX_CONTEXT = 8192
    small, large = fake_ollama(context_length=4096), fake_ollama(context_length=131072)
    fake_pool("small", [small])
    fake_pool("large", [large])
    assert selectors.model_context_window(tenant=ANY, target="small/fake") == 4096
    assert selectors.model_context_window(tenant=ANY, target="large/fake") == 8192
    ask("small/fake")
    assert small.stats()["last_body"]["options"]["num_ctx"] == 4096
    # A caller's own num_ctx stands.
    ask("small/fake", num_ctx=1024)
    assert small.stats()["last_body"]["options"]["num_ctx"] == 1024
    assert small.stats()["last_body"]["truncate"] is False


def test_a_modelfile_num_ctx_is_the_window_ollama_runs_with():
    show = {"parameters": "stop \"<|im_end|>\"\nnum_ctx 2048", "model_info": {"llama.context_length": 131072}}
    assert context.ollama_window(show) == 2048
    assert context.ollama_window({"model_info": {"qwen2.context_length": 32768}}) == 8192
    assert context.ollama_window({"model_info": {}}) is None


@pytest.mark.django_db
def test_the_window_is_discovered_once_then_cached_for_every_process(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(context_length=4096)
    fake_pool("p", [fake])
    assert selectors.model_context_window(tenant=ANY, target="p/fake") == 4096
    context.forget()  # another process: only Redis knows
    assert selectors.model_context_window(tenant=ANY, target="p/fake") == 4096
    ask("p/fake")
    assert fake.stats()["by_path"]["/api/show"] == 1


@pytest.mark.django_db
def test_a_pool_is_as_small_as_its_smallest_server(fake_ollama, fake_pool):
    fake_pool("p", [fake_ollama(context_length=16384), fake_ollama(context_length=2048)])
    assert selectors.model_context_window(tenant=ANY, target="p/fake") == 2048


def test_a_pool_override_wins_over_what_the_servers_say(fake_ollama, no_billing):
    fake = fake_ollama(context_length=4096)
    spec = pool_spec("over", [fake], context_windows=(("fake", 1500),))
    registry.register_pool(spec)
    try:
        assert context.window_sync(spec, "fake") == 1500
        assert context.window_sync(spec, "fake:latest") == 1500
        ask("over/fake")
        assert fake.stats()["last_body"]["options"]["num_ctx"] == 1500
        assert "/api/show" not in fake.stats()["by_path"]
    finally:
        registry.unregister_pool("over")
    assert context.override(pool_spec("any", [fake], context_windows=(("*", 3000),)), "other") == 3000


@pytest.mark.django_db
def test_environment_pools_take_overrides_from_llm_context_windows(settings):
    settings.OLLAMA_HOSTS = ["http://127.0.0.1:9"]  # nothing listens: the override alone answers
    settings.LLM_CONTEXT_WINDOWS = {"ollama/llama3.2": 6000, "local/*": 2048}
    settings.LOCAL_LLM_URL = "http://127.0.0.1:9"
    assert selectors.model_context_window(tenant=ANY, target="ollama/llama3.2") == 6000
    assert selectors.model_context_window(tenant=ANY, target="local/smollm2") == 2048


@pytest.mark.django_db
def test_admin_pools_take_overrides_from_their_context_windows(fake_ollama):
    fake = fake_ollama(context_length=32768)
    pool = Pool.objects.create(name="gpu", kind="ollama", context_windows={"fake": 12000})
    PoolServer.objects.create(pool=pool, name="gpu-0", base_url=fake.url)
    registry.invalidate()
    try:
        assert selectors.model_context_window(tenant=ANY, target="gpu/fake") == 12000
    finally:
        registry.invalidate()
    pool.context_windows = {"fake": "big"}
    with pytest.raises(Exception, match="model name to tokens"):
        pool.full_clean()


def test_openai_models_come_from_the_table():
    spec = pool_spec("oa", [], kind="openai", dialect="openai")
    assert context.window_sync(spec, "gpt-4o-mini") == 128_000
    assert context.window_sync(spec, "gpt-4.1-mini") == 1_047_576
    assert context.window_sync(spec, "gpt-5-mini") == 272_000
    assert context.window_sync(spec, "some-new-model") is None


def test_openai_compatible_listings_that_state_a_window_are_read():
    listing = {"data": [{"id": "qwen", "max_model_len": 32768}, {"id": "other", "context_length": 4096}]}
    assert context.models_entry_window(listing, "qwen") == 32768
    assert context.models_entry_window(listing, "other") == 4096
    assert context.models_entry_window(listing, "missing") is None


@pytest.mark.django_db
def test_an_unknown_target_has_no_window():
    assert selectors.model_context_window(tenant=ANY, target="ghost/model") is None
    assert selectors.model_context_window(tenant=ANY, target="not-a-target") is None


# --- refusals for length --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,window,prompt", [
    ("Requested tokens (4787) exceed context window of 4096", 4096, 4787),
    ("This model's maximum context length is 1024 tokens. However, you requested 2036 tokens (2031 in the "
     "messages, 5 in the completion). context_length_exceeded", 1024, 2031),
    ('{"error":{"code":400,"message":"request (351 tokens) exceeds the available context size (256 tokens), try '
     'increasing it","type":"exceed_context_size_error","n_prompt_tokens":351,"n_ctx":256}}', 256, 351),
    ("the input length exceeds the context length", None, None),
])
def test_each_providers_words_for_too_long_are_recognised(text, window, prompt):
    assert is_context_overflow(text)
    assert context_numbers(text) == (window, prompt)
    error = ProviderError.from_status(400, text, server="s")
    assert error.kind == "context" and not error.server_fault and not error.retryable


def test_other_client_errors_are_not_mistaken_for_length():
    for text in ("invalid temperature", "model 'x' not found", "content policy violation"):
        assert not is_context_overflow(text)
        assert ProviderError.from_status(400, text, server="s").server_fault is False


def test_an_overflowing_ollama_prompt_is_a_context_overflow_before_any_token(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(context_length=64)
    fake_pool("p", [fake])
    parts, error = stream("p/fake", "word " * 200)
    assert parts == []
    assert isinstance(error, ContextOverflow) and isinstance(error, InvalidParams) and error.status == 400
    assert error.context_window == 64 and error.prompt_tokens == 201
    assert "too long" in error.message
    assert fake.stats()["refused_context"] == 1 and fake.stats()["truncated"] == 0
    # Nothing was billed: the reservation came back.
    assert no_billing["record"] == [] and len(no_billing["release"]) == 1


def test_an_overflowing_prompt_on_an_openai_compatible_server_is_a_context_overflow(fake_ollama, fake_pool,
                                                                                    no_billing):
    fake = fake_ollama(default_num_ctx=100)
    fake_pool("v1", [fake], kind="openai")
    with pytest.raises(ContextOverflow) as caught:
        ask("v1/fake", "word " * 300)
    assert caught.value.context_window == 100


def test_an_overflow_is_not_retried_on_other_servers_or_fallbacks(fake_ollama, fake_pool, no_billing):
    a, b, backup = fake_ollama(context_length=64), fake_ollama(context_length=64), fake_ollama(context_length=64)
    fake_pool("p", [a, b])
    fake_pool("backup", [backup])
    with pytest.raises(ContextOverflow):
        gateway.chat_sync(tenant=ANY, target="p/fake", fallbacks=["backup/fake"],
                          request=ChatRequest(messages=[{"role": "user", "content": "word " * 200}]),
                          usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))
    assert a.stats()["requests"] + b.stats()["requests"] == 1 and backup.stats()["requests"] == 0


def test_without_truncate_false_ollama_would_have_cut_the_prompt_silently(fake_ollama):
    """Why the gateway sends truncate=false: the fake behaves like Ollama when a client does not."""
    import httpx

    fake = fake_ollama(context_length=64)
    response = httpx.post(fake.url + "/api/chat", json={"model": "fake", "stream": False, "options": {"num_ctx": 64},
                                                        "messages": [{"role": "user", "content": "word " * 200}]})
    assert response.status_code == 200 and fake.stats()["truncated"] == 1


def test_overflows_never_mark_the_server_unhealthy(fake_ollama, fake_pool, no_billing):
    fake = fake_ollama(context_length=64)
    fake_pool("p", [fake])
    for _ in range(5):
        with pytest.raises(ContextOverflow):
            ask("p/fake", "word " * 200)
    snapshot = state.server_snapshot(registry.resolve_pool("p").servers[0].sid)
    assert snapshot["cooldown_s"] == 0 and snapshot["consecutive_failures"] == 0 and snapshot["fail_total"] == 0
    assert snapshot["inflight"] == 0
    assert ask("p/fake", "short question").text  # the single server still answers at once
