"""Chat test fixtures: a fake Ollama behind the real gateway, knowledge to answer from, Celery modes, a live
ASGI server with a chat worker (for streaming and the official openai client)."""

from __future__ import annotations

import uuid

import pytest

from accounts.tenancy import tenant_scope
from knowledge.search.types import SearchHit, SearchResult
from tests.support import ollama_fake

FAKE_POOL = "chatfake"
FAKE_MODEL = "fake"


@pytest.fixture
def fake_llm(settings):
    """A fast fake Ollama (1 slot) registered with the gateway as the pool `chatfake`; target 'chatfake/fake'."""
    from llm import registry
    from llm.registry import PoolSpec, ServerSpec

    with ollama_fake.FakeOllama(token_rate=2000, slots=1, reply_tokens=8) as fake:
        spec = PoolSpec(
            name=FAKE_POOL, kind="ollama", source="static", queue_timeout_s=10, first_token_timeout_s=10,
            idle_timeout_s=10, max_attempts=1,
            servers=(ServerSpec(sid=f"test:chat:{uuid.uuid4().hex[:8]}", name="fake-ollama", base_url=fake.url),),
        )
        registry.register_pool(spec)
        fake.target = f"{FAKE_POOL}/{FAKE_MODEL}"
        try:
            yield fake
        finally:
            registry.unregister_pool(FAKE_POOL)


@pytest.fixture
def reply(monkeypatch, fake_llm):
    """Make the fake model answer with the given text (one word per token)."""

    def set_reply(text: str):
        words = text.split(" ")
        fake_llm.configure(reply_tokens=len(words))
        monkeypatch.setattr(ollama_fake, "reply_words",
                            lambda n: [(w if i == 0 else " " + w) for i, w in enumerate(words[:n])])

    return set_reply


@pytest.fixture
def eager_celery():
    """Tasks run inline when enqueued (with transactional tests, on_commit fires right away)."""
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = previous


@pytest.fixture
def assistant_a(scope_a, fake_llm):
    from chat.services import assistant_create

    return assistant_create(tenant=scope_a.tenant, name="Helpdesk", answer_target=fake_llm.target,
                            cheap_target=fake_llm.target)


class KnowledgeFixture:
    """Real knowledge rows (KB, documents, chunks) and the search result that retrieval returns for them."""

    def __init__(self, tenant):
        from knowledge.models import Chunk, Document, KnowledgeBase

        self.tenant = tenant
        with tenant_scope(tenant):
            self.kb = KnowledgeBase.objects.create(tenant=tenant, name=f"Handbook {uuid.uuid4().hex[:4]}",
                                                   embedding_model="use-multilingual", embedding_dim=512)
        self._Chunk, self._Document = Chunk, Document
        self.hits: list[SearchHit] = []

    def add(self, text: str, *, title: str = "Employee handbook", page: int | None = 1) -> SearchHit:
        with tenant_scope(self.tenant):
            document = self._Document.objects.create(
                tenant=self.tenant, kb=self.kb, title=title, filename=f"{title}.txt", sha256=uuid.uuid4().hex,
                status="ready")
            chunk = self._Chunk.objects.create(tenant=self.tenant, document=document, kb=self.kb, ordinal=0,
                                               text=text, page=page)
        hit = SearchHit(chunk_id=chunk.pk, document_id=document.pk, kb_id=self.kb.pk, document_title=title,
                        text=text, ordinal=0, page=page, score=1.0 / (len(self.hits) + 1), bm25_score=1.0,
                        bm25_rank=len(self.hits) + 1)
        self.hits.append(hit)
        return hit


@pytest.fixture
def docs(monkeypatch, tenant_a):
    """Chunks the assistant retrieves. Retrieval quality is the search app's concern; here it returns these."""
    fixture = KnowledgeFixture(tenant_a.tenant)
    fixture.queries = []

    def fake_retrieve(*, tenant, assistant, query, usage=None):
        fixture.queries.append(query)
        return SearchResult(query=query, hits=list(fixture.hits))

    monkeypatch.setattr("chat.retrieval.retrieve", fake_retrieve)
    return fixture


@pytest.fixture
def llm_calls(monkeypatch):
    """Record every request chat sends to the gateway (the gateway still answers)."""
    from chat import llm

    calls = []
    real_stream, real_complete = llm.answer_stream, llm.complete

    def answer_stream(**kwargs):
        calls.append(("answer", kwargs))
        return real_stream(**kwargs)

    def complete(**kwargs):
        calls.append(("complete", kwargs))
        return real_complete(**kwargs)

    monkeypatch.setattr(llm, "answer_stream", answer_stream)
    monkeypatch.setattr(llm, "complete", complete)
    return calls


@pytest.fixture
def openai_pool():
    """An OpenAI pool (never called): enough for the gateway to say which parameters OpenAI ignores."""
    from llm import registry
    from llm.registry import PoolSpec, ServerSpec

    registry.register_pool(PoolSpec(name="openai", kind="openai", dialect="openai", is_local=False, source="static",
                                    label="OpenAI", servers=(ServerSpec(sid="test:chat:openai", name="openai",
                                                                        base_url="http://127.0.0.1:9/v1"),)))
    yield
    registry.unregister_pool("openai")
