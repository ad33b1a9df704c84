"""Chat never waits behind ingestion in the default configuration (issue 12, section 6).

scripts/run-app's web server and workers (read from the script) run in processes of their own. Every ingestion
slot is taken by a document whose embedding call hangs (an OpenAI-compatible fake that sends headers and then
nothing: no CPU spent, the slots just stay busy, as with a 16-minute document). A question asked then must be
answered at once, not after the documents.
"""

from __future__ import annotations

import httpx
import pytest

from accounts.models import Tenant
from accounts.tenancy import system_scope, tenant_scope
from chat.models import AnswerMode
from knowledge import services as knowledge
from knowledge.models import Document
from tests.chat.live import backend_pids, close_new_connections
from tests.chat.run_app import RedisServer, Stack, processes
from tests.factories.chat import AssistantFactory
from tests.factories.knowledge import make_kb
from tests.support.ollama_fake import FakeOllamaProcess
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def ingest_slots() -> int:
    return sum(int(p.option("-c", "1")) for p in processes() if "ingest" in p.queues)


@pytest.fixture
def stack(tmp_path, tenant_a):
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    before = backend_pids()
    running = None
    try:
        with FakeOllamaProcess(token_rate=200, slots=4, reply_tokens=8, models=["fake:latest"]) as model, \
                FakeOllamaProcess(slots=100, models=["text-embedding-3-small:latest"]) as embeddings:
            embeddings.fail("stall")  # every embedding request hangs
            running = Stack(tmp_path, redis_url=redis_server.url, OLLAMA_HOSTS=model.url, OLLAMA_MODEL="fake",
                            LLM_ANSWER_TARGET="ollama/fake", OPENAI_API_KEY="sk-test",
                            OPENAI_BASE_URL=f"{embeddings.url}/v1")
            yield running
            embeddings.heal()
    finally:
        if running is not None:
            running.stop()
        redis_server.stop()
        close_new_connections(before)


@pytest.fixture
def setup(tenant_a):
    """An assistant answering from a small indexed KB, and a KB whose documents embed through the hanging fake."""
    Tenant.objects.filter(pk=tenant_a.tenant.pk).update(plan="unlimited")
    with tenant_scope(tenant_a.tenant):
        kb = make_kb(tenant_a.tenant, name="Policies")
        document, _ = knowledge.document_create_from_text(
            tenant=tenant_a.tenant, kb=kb, title="Refunds", enqueue=False,
            text="Refunds are possible within thirty days of purchase.")
        assert knowledge.document_process(tenant=tenant_a.tenant, document_id=document.pk).status == "ready"
        assistant = AssistantFactory(tenant=tenant_a.tenant, name="Desk", answer_mode=AnswerMode.GENERATIVE,
                                     answer_target="ollama/fake", cheap_target="ollama/fake")
        assistant.knowledge_bases.add(kb)
        slow_kb = make_kb(tenant_a.tenant, name="Archive", embedding_model="openai:text-embedding-3-small")
    return assistant, slow_kb


def test_run_app_gives_chat_its_own_worker():
    workers = [p for p in processes() if p.name != "web"]
    chat = [p for p in workers if "chat" in p.queues]
    assert len(chat) == 1 and not chat[0].queues & {"ingest", "default"}
    assert any("ingest" in p.queues for p in workers)
    # Answers mostly wait: many run in threads of one process, on a small shared database pool.
    assert chat[0].option("-P") == "threads" and int(chat[0].option("-c")) >= 200
    assert int(chat[0].env["DB_POOL_MAX"]) <= 50


def test_chat_is_answered_while_ingestion_holds_every_ingest_slot(stack, setup, tenant_a):
    assistant, slow_kb = setup
    auth = {"Authorization": f"Bearer {tenant_a.api_key}"}
    slots = ingest_slots()
    ids = []
    for i in range(slots + 1):
        upload = httpx.post(f"{stack.url}/api/v1/knowledge-bases/{slow_kb.pk}/documents", headers=auth, timeout=30,
                            files={"file": (f"archive-{i}.txt", f"Archived note number {i}.".encode(), "text/plain")})
        assert upload.status_code == 201, upload.text
        ids.append(upload.json()["id"])

    def embedding() -> int:
        with system_scope():
            return Document.all_tenants.filter(pk__in=ids, status="embedding").count()

    wait_for(lambda: embedding() >= slots, timeout=60, what="every ingestion slot to be busy")

    answer = httpx.post(f"{stack.url}/api/v1/assistants/{assistant.pk}/chat", headers=auth, timeout=30,
                        json={"message": "How long do refunds take?"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["answer"]["status"] == "done"
    assert embedding() >= slots  # the documents are still at it: the answer did not wait for them
