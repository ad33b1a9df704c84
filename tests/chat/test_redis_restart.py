"""Redis restarts while an answer streams and a document ingests (issue 12, section 6).

The stack is scripts/run-app's (`make run`): its web server and workers, read from the script, in processes of
their own on the test database, against a redis-server this test starts and then kills and starts again on the
same port, empty (it keeps no data, as the one scripts/postgres_redis.py starts). The model is a fake Ollama
streaming a known reply slowly.
Expected: the stream resumes and ends with `done`, its text (after any `reset`) is the whole reply and what was
saved; the document is ingested with every chunk exactly once; a question asked afterwards is answered.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from accounts.models import Tenant
from accounts.tenancy import system_scope, tenant_scope
from chat.models import AnswerMode, Message
from knowledge import services as knowledge
from knowledge.models import Chunk, Document
from tests.chat.live import backend_pids, close_new_connections
from tests.chat.run_app import RedisServer, Stack
from tests.factories.chat import AssistantFactory
from tests.factories.knowledge import make_kb
from tests.support.ollama_fake import FakeOllamaProcess, reply_words
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPLY_TOKENS = 60
TOKEN_RATE = 6  # tokens/s: the answer streams for ten seconds, the restart falls in the middle
SENTENCE = "Refunds are possible within thirty days of purchase when the receipt is shown at the desk."


@pytest.fixture
def drill(tmp_path, tenant_a):
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    before = backend_pids()
    stack = None
    try:
        with FakeOllamaProcess(token_rate=TOKEN_RATE, slots=4, reply_tokens=REPLY_TOKENS,
                               models=["fake:latest"]) as fake:
            stack = Stack(tmp_path, redis_url=redis_server.url, OLLAMA_HOSTS=fake.url, OLLAMA_MODEL="fake",
                          OLLAMA_NUM_PARALLEL=4, LLM_ANSWER_TARGET="ollama/fake",
                          INGEST_EMBED_BATCH=2)  # many small batches: the document takes a while
            yield stack, redis_server
    finally:
        if stack is not None:
            stack.stop()
        redis_server.stop()
        close_new_connections(before)


@pytest.fixture
def assistant(tenant_a):
    """An assistant answering from one indexed document with the fake model."""
    Tenant.objects.filter(pk=tenant_a.tenant.pk).update(plan="unlimited")  # no chunk or token limits in the way
    with tenant_scope(tenant_a.tenant):
        kb = make_kb(tenant_a.tenant, name="Policies")
        document, _ = knowledge.document_create_from_text(tenant=tenant_a.tenant, kb=kb, title="Refunds",
                                                          text=SENTENCE, enqueue=False)
        assert knowledge.document_process(tenant=tenant_a.tenant, document_id=document.pk).status == "ready"
        assistant = AssistantFactory(tenant=tenant_a.tenant, name="Desk", answer_mode=AnswerMode.GENERATIVE,
                                     answer_target="ollama/fake", cheap_target="ollama/fake",
                                     max_tokens=REPLY_TOKENS)
        assistant.knowledge_bases.add(kb)
    return assistant


class ChatStream(threading.Thread):
    """POST .../chat with stream=true; keeps every event, and the text as a client builds it."""

    def __init__(self, url, key, assistant_id):
        super().__init__(daemon=True)
        self.url, self.key, self.assistant_id = url, key, assistant_id
        self.status, self.events, self.text, self.error = None, [], "", None

    def run(self):
        try:
            with httpx.Client(base_url=self.url, timeout=120) as http, http.stream(
                    "POST", f"/api/v1/assistants/{self.assistant_id}/chat", json={"message": "Refunds?", "stream": True},
                    headers={"Authorization": f"Bearer {self.key}"}) as response:
                self.status = response.status_code
                event = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event:
                        data = json.loads(line[6:])
                        self.events.append((event, data))
                        if event == "token":
                            self.text += data.get("text", "")
                        elif event == "reset":
                            self.text = ""
        except Exception as exc:  # noqa: BLE001 - the assertions report it
            self.error = exc

    def tokens(self) -> int:
        return sum(1 for kind, _data in self.events if kind == "token")


def _document(pk) -> Document:
    with system_scope():
        return Document.all_tenants.get(pk=pk)


def _big_text() -> str:
    """Ordinary prose for the chunker (varied words: repeated text is refused as degenerate)."""
    import random

    rng = random.Random(12)
    words = [f"{stem}{suffix}" for stem in ("refund", "ship", "order", "invoice", "return", "parcel", "credit", "desk",
                                            "policy", "warranty", "customer", "receipt", "store", "account")
             for suffix in ("", "s", "ed", "ing", "er", "able", "ment", "ful")]
    return "\n\n".join(
        f"Section {i}. " + " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(8, 16))).capitalize() + "."
                                    for _ in range(12)) for i in range(600))


def test_redis_restart_while_answering_and_ingesting(drill, tenant_a, assistant):
    stack, redis_server = drill
    key = tenant_a.api_key
    with tenant_scope(tenant_a.tenant):
        kb = assistant.knowledge_bases.get()
    upload = httpx.post(f"{stack.url}/api/v1/knowledge-bases/{kb.pk}/documents", timeout=60,
                        headers={"Authorization": f"Bearer {key}"},
                        files={"file": ("handbook.md", _big_text().encode(), "text/markdown")})
    assert upload.status_code == 201, upload.text
    document_id = upload.json()["id"]
    wait_for(lambda: _document(document_id).status == "embedding", what="ingestion to start embedding")

    chat = ChatStream(stack.url, key, assistant.pk)
    chat.start()
    wait_for(lambda: chat.tokens() >= 5 or chat.error, timeout=60, what="the answer to stream")

    redis_server.kill()  # mid-answer, mid-document
    time.sleep(2)
    redis_server.start()
    assert _document(document_id).status != "ready"  # the restart did fall in the middle of the ingestion

    chat.join(120)
    assert not chat.is_alive(), "the stream hung"
    assert chat.error is None and chat.status == 200
    assert chat.events[-1][0] == "done", chat.events[-3:]
    expected = "".join(reply_words(REPLY_TOKENS))
    assert chat.text == expected  # nothing lost, nothing twice (a `reset` restarted the text when needed)
    with system_scope():
        answer = Message.all_tenants.get(pk=chat.events[-1][1]["message"]["id"])
    assert answer.status == Message.Status.DONE and answer.content == expected

    wait_for(lambda: _document(document_id).status in ("ready", "failed"), timeout=240, interval=0.5,
             what="the document to finish")
    document = _document(document_id)
    assert document.status == "ready", document.error
    with system_scope():
        ordinals = list(Chunk.all_tenants.filter(document_id=document_id).order_by("ordinal")
                        .values_list("ordinal", flat=True))
        unembedded = Chunk.all_tenants.filter(document_id=document_id, embedding__isnull=True).count()
    assert ordinals == list(range(document.chunks_total)) and document.chunks_total > 50
    assert unembedded == 0

    after = ChatStream(stack.url, key, assistant.pk)  # the workers are back on the broker
    after.run()
    assert after.status == 200 and after.events[-1][0] == "done" and after.text == expected
