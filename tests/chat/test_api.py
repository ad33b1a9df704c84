"""The chat REST API. Answers run through eager Celery (transactional tests, so on_commit fires) and the real
gateway against the fake Ollama; the view waits on the same Redis stream a live server relays."""

import json

import pytest

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from billing.errors import QuotaExceeded
from chat.models import Assistant, Conversation, Message
from tests.chat.test_sse import parse
from tests.conftest import api_client

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume"),
]


@pytest.fixture
def ready(eager_celery, assistant_a, docs, reply):
    docs.add("Refunds are possible within 30 days of purchase.", title="Refund policy", page=3)
    reply("Refunds are possible within 30 days [1].")
    return assistant_a


def chat(api, assistant_id, **body):
    return api.post(f"/api/v1/assistants/{assistant_id}/chat", body, format="json")


def test_chat_returns_a_grounded_answer(api_a, ready, docs):
    response = chat(api_a, ready.pk, message="What is the refund window?")
    assert response.status_code == 201, response.content
    body = response.json()
    answer = body["answer"]
    assert answer["status"] == "done" and answer["content"] == "Refunds are possible within 30 days [1]."
    assert answer["citations"][0]["chunk_id"] == docs.hits[0].chunk_id
    assert answer["citations"][0]["title"] == "Refund policy" and answer["citations"][0]["page"] == 3
    assert answer["usage"]["output_tokens"] == 7
    assert body["question"]["content"] == "What is the refund window?"
    conversation = body["conversation_id"]
    follow_up = chat(api_a, ready.pk, message="And after that?", conversation_id=conversation)
    assert follow_up.status_code == 201 and follow_up.json()["conversation_id"] == conversation


def test_chat_streams_server_sent_events(api_a, ready):
    response = chat(api_a, ready.pk, message="What is the refund window?", stream=True)
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = parse(b"".join(response))
    # The stream opens as the question is saved, before any worker event: meta (queued), then the first step.
    assert events[0]["event"] == "meta" and events[0]["data"]["status"] == "queued"
    assert events[1]["event"] == "step" and events[1]["data"] == {"step": "searching"}
    assert events[-1]["event"] == "done"
    assert "".join(e["data"]["text"] for e in events if e["event"] == "token") == \
        "Refunds are possible within 30 days [1]."
    # The same stream can be followed (and resumed) by id later.
    message_id = events[-1]["data"]["message"]["id"]
    again = api_a.get(f"/api/v1/messages/{message_id}/stream", HTTP_LAST_EVENT_ID=events[-2]["id"])
    assert [e["event"] for e in parse(b"".join(again))] == ["done"]


def test_unknown_assistant_and_conversation_are_404(api_a, api_b, ready):
    assert chat(api_a, 999999, message="hi").status_code == 404
    assert chat(api_b, ready.pk, message="hi").status_code == 404  # another tenant's assistant
    response = chat(api_a, ready.pk, message="hi", conversation_id=999999)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("body, field", [
    ({}, "message"),
    ({"message": "   "}, "message"),
    ({"message": "x" * 9000}, "message"),
    ({"message": "hi", "stream": "maybe"}, "stream"),
    ({"message": "hi", "conversation_id": "abc"}, "conversation_id"),
])
def test_bad_parameters_are_400_with_the_field(api_a, ready, body, field):
    response = api_a.post(f"/api/v1/assistants/{ready.pk}/chat", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_a_key_without_the_chat_scope_is_403(tenant_a, ready):
    _key, raw = api_key_create(tenant=tenant_a.tenant, name="reader", scopes=["read"])
    response = chat(api_client(raw), ready.pk, message="hi")
    assert response.status_code == 403 and "chat" in response.json()["error"]["message"]


def test_quota_exceeded_is_429_with_retry_after(api_a, ready, monkeypatch):
    async def over_quota(**kwargs):
        raise QuotaExceeded("Monthly token allowance used up.", limit="monthly_tokens", retry_after_s=120)
        yield  # pragma: no cover

    monkeypatch.setattr("chat.llm.answer_stream", over_quota)
    for stream in (False, True):
        response = chat(api_a, ready.pk, message="hi", stream=stream)
        assert response.status_code == 429
        assert response["Retry-After"] == "120"
        assert response.json()["error"]["code"] == "quota_exceeded"


def test_model_down_is_503_and_the_failure_is_saved(api_a, ready, fake_llm, scope_a):
    Assistant.objects.filter(pk=ready.pk).update(answer_mode="generative")  # no quoting fallback
    fake_llm.fail("http500")
    response = chat(api_a, ready.pk, message="hi")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert Message.objects.get(role="assistant").status == Message.Status.FAILED


def test_model_down_with_fallback_quotes_the_documents_and_says_so(api_a, ready, fake_llm, scope_a):
    Assistant.objects.filter(pk=ready.pk).update(answer_mode="generative_fallback")
    fake_llm.fail("http500")
    response = chat(api_a, ready.pk, message="What is the refund window?")
    assert response.status_code == 201, response.content
    answer = response.json()["answer"]
    assert answer["answered_by"] == "extractive" and answer["status"] == "done"
    assert "within 30 days of purchase" in answer["content"] and answer["citations"]
    assert any("quoting the documents" in w for w in answer["warnings"])
    assert answer["usage"]["estimated"] is False and answer["usage"]["output_tokens"] == 0


def test_answers_carry_cited_chunks_and_every_given_chunk(api_a, ready, docs):
    docs.add("The support office in Seoul opens at nine.", title="Office hours", page=None)
    answer = chat(api_a, ready.pk, message="What is the refund window?").json()["answer"]
    assert answer["answered_by"] == "generative" and answer["model"]
    assert [c["n"] for c in answer["citations"]] == [1]
    assert [(s["n"], s["title"], s["cited"]) for s in answer["sources"]] == [
        (1, "Refund policy", True), (2, "Office hours", False)]
    assert answer["sources"][0]["chunk_id"] == answer["citations"][0]["chunk_id"] == docs.hits[0].chunk_id
    assert answer["sources"][1]["snippet"].startswith("The support office")
    for key in ("chunk_id", "document_id", "kb_id", "title", "page", "heading", "snippet", "url"):
        assert key in answer["sources"][1]
    # The same on the message endpoints.
    detail = api_a.get(f"/api/v1/messages/{answer['id']}").json()
    assert detail["sources"] == answer["sources"] and detail["answered_by"] == "generative"


def test_extractive_assistant_over_the_api(api_a, ready, docs, llm_calls):
    assert api_a.patch(f"/api/v1/assistants/{ready.pk}", {"answer_mode": "extractive"},
                       format="json").json()["answer_mode"] == "extractive"
    answer = chat(api_a, ready.pk, message="What is the refund window?").json()["answer"]
    assert answer["answered_by"] == "extractive" and llm_calls == []
    assert "Refunds are possible within 30 days of purchase." in answer["content"]
    assert answer["citations"] and answer["sources"][0]["cited"] is True
    assert answer["usage"] == {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0, "estimated": False}


def test_openai_responses_carry_citations_sources_and_answered_by(api_a, ready, docs):
    docs.add("The support office in Seoul opens at nine.", title="Office hours")
    body = {"model": ready.name, "messages": [{"role": "user", "content": "What is the refund window?"}]}
    reply = api_a.post("/api/v1/openai/chat/completions", body, format="json").json()
    assert [c["n"] for c in reply["citations"]] == [1]
    assert [(s["title"], s["cited"]) for s in reply["sources"]] == [("Refund policy", True), ("Office hours", False)]
    assert reply["ragdesk"]["answered_by"] == "generative"

    streamed = api_a.post("/api/v1/openai/chat/completions", {**body, "stream": True}, format="json")
    chunks = [json.loads(line[6:]) for line in b"".join(streamed).decode().split("\n")
              if line.startswith("data: {")]
    final = [c for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"]][-1]
    assert [c["n"] for c in final["citations"]] == [1] and len(final["sources"]) == 2
    assert final["ragdesk"]["answered_by"] == "generative"
    assert all("step" not in json.dumps(c.get("choices", [])) for c in chunks)  # no progress in OpenAI chunks


def test_body_usage_is_the_answer_call_and_the_header_counts_every_stage(api_a, ready, tenant_a):
    """The body's `usage` (and OpenAI's) is the call that wrote the answer; X-Usage-Message-Tokens is every
    model call billed for the answer. A follow-up is condensed first, so the header is strictly more."""
    from billing.selectors import usage_for_message

    first = chat(api_a, ready.pk, message="What is the refund window?").json()
    follow_up = chat(api_a, ready.pk, message="And after that?", conversation_id=first["conversation_id"])
    openai = api_a.post("/api/v1/openai/chat/completions", {"model": ready.name, "messages": [
        {"role": "user", "content": "What is the refund window?"}, {"role": "assistant", "content": "30 days."},
        {"role": "user", "content": "And after that?"}]}, format="json")
    for response, usage, answer_id in (
        (follow_up, follow_up.json()["answer"]["usage"], follow_up.json()["answer"]["id"]),
        (openai, {"input_tokens": openai.json()["usage"]["prompt_tokens"],
                  "output_tokens": openai.json()["usage"]["completion_tokens"]}, openai.json()["ragdesk"]["message_id"]),
    ):
        stages = {s.stage: s for s in usage_for_message(tenant=tenant_a.tenant, message_id=answer_id).stages}
        assert set(stages) == {"condense", "answer"}
        assert (usage["input_tokens"], usage["output_tokens"]) == (stages["answer"].input_tokens,
                                                                   stages["answer"].output_tokens)
        header = int(response["X-Usage-Message-Tokens"])
        assert header == usage["input_tokens"] + usage["output_tokens"] + stages["condense"].total_tokens
        assert header > usage["input_tokens"] + usage["output_tokens"] > 0


def test_openai_call_is_one_transaction(api_a, ready, scope_a):
    """A refused question leaves no conversation or imported history behind."""
    response = api_a.post("/api/v1/openai/chat/completions", {"model": ready.name, "messages": [
        {"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "x" * 9000}]}, format="json")
    assert response.status_code == 400 and "message" in response.json()["error"]["fields"]
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_conversations_messages_rename_delete(api_a, api_b, ready):
    conversation_id = chat(api_a, ready.pk, message="What is the refund window?").json()["conversation_id"]
    listed = api_a.get("/api/v1/conversations").json()["results"]
    assert [c["id"] for c in listed] == [conversation_id]
    assert api_a.get("/api/v1/conversations?q=refund").json()["count"] == 1
    assert api_a.get("/api/v1/conversations?q=nothing-like-it").json()["count"] == 0
    assert api_b.get("/api/v1/conversations").json()["count"] == 0

    messages = api_a.get(f"/api/v1/conversations/{conversation_id}/messages").json()["results"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["citations"]

    renamed = api_a.patch(f"/api/v1/conversations/{conversation_id}", {"title": "Refunds"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["title"] == "Refunds"
    assert api_a.patch(f"/api/v1/conversations/{conversation_id}", {"title": ""}, format="json").status_code == 400
    assert api_b.delete(f"/api/v1/conversations/{conversation_id}").status_code == 404
    assert api_a.delete(f"/api/v1/conversations/{conversation_id}").status_code == 204
    assert not Conversation.objects.filter(pk=conversation_id).exists()


def test_feedback_regenerate_and_stop(api_a, ready):
    answer = chat(api_a, ready.pk, message="What is the refund window?").json()["answer"]
    url = f"/api/v1/messages/{answer['id']}"
    assert api_a.get(url + "/feedback").json()["rating"] is None
    assert api_a.put(url + "/feedback", {"rating": 5}, format="json").status_code == 400
    saved = api_a.put(url + "/feedback", {"rating": -1, "comment": "Too short"}, format="json")
    assert saved.status_code == 200 and saved.json()["rating"] == -1
    assert api_a.get(url + "/feedback").json()["comment"] == "Too short"

    regenerated = api_a.post(url + "/regenerate")
    assert regenerated.status_code == 201
    assert regenerated.json()["answer"]["version"] == 2
    assert regenerated.json()["answer"]["question_id"] == answer["question_id"]

    stopped = api_a.post(url + "/stop")  # already finished: stop changes nothing
    assert stopped.status_code == 202 and stopped.json()["status"] == "done"
    question_url = f"/api/v1/messages/{answer['question_id']}"
    assert api_a.post(question_url + "/regenerate").status_code == 404  # a question is not an answer


def test_assistant_answer_mode_over_the_api(api_a, ready):
    created = api_a.post("/api/v1/assistants", {"name": "Quoter", "answer_mode": "extractive"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["answer_mode"] == "extractive"
    url = f"/api/v1/assistants/{created.json()['id']}"
    assert api_a.patch(url, {"answer_mode": "generative_fallback"}, format="json").json()["answer_mode"] == \
        "generative_fallback"
    assert api_a.get(url).json()["answer_mode"] == "generative_fallback"
    bad = api_a.patch(url, {"answer_mode": "poetry"}, format="json")
    assert bad.status_code == 400 and "answer_mode" in bad.json()["error"]["fields"]
    assert Assistant.objects.get(pk=created.json()["id"]).answer_mode == "generative_fallback"


def test_assistants_crud_with_validation(api_a, tenant_a, ready, docs, openai_pool):
    created = api_a.post("/api/v1/assistants", {
        "name": "Support", "knowledge_bases": [docs.kb.pk], "temperature": 0.1, "top_k": 5,
        "few_shot": [{"user": "Hi?", "assistant": "Hello [1]."}], "retrieval": {"k": 4},
        "answer_target": "openai/gpt-4o-mini",
    }, format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["knowledge_bases"] == [docs.kb.pk] and data["top_p"] == 0.85
    assert any("top_k" in note for note in data["parameter_notes"])  # OpenAI has no top_k: said so

    for bad, field in [({"temperature": 3}, "temperature"), ({"top_p": -0.1}, "top_p"),
                       ({"knowledge_bases": [999999]}, "knowledge_bases"), ({"retrieval": {"k": 500}}, "retrieval"),
                       ({"few_shot": [{"user": "only a question"}]}, "few_shot"), ({"name": "Support"}, "name")]:
        response = api_a.post("/api/v1/assistants", {"name": "Other", **bad}, format="json")
        assert response.status_code == 400, (bad, response.content)
        assert field in response.json()["error"]["fields"], (bad, response.json())

    url = f"/api/v1/assistants/{data['id']}"
    assert api_a.patch(url, {"max_tokens": 200}, format="json").json()["max_tokens"] == 200
    _key, raw = api_key_create(tenant=tenant_a.tenant, name="chatter", scopes=["read", "chat"])
    assert api_client(raw).patch(url, {"max_tokens": 10}, format="json").status_code == 403
    assert api_client(raw).get(url).status_code == 200
    assert api_a.delete(url).status_code == 204
    assert not Assistant.objects.filter(pk=data["id"]).exists()


def test_openapi_documents_the_chat_api(client):
    schema = client.get("/api/schema/").content.decode()
    for path in ("/api/v1/assistants/{assistant_id}/chat", "/api/v1/conversations", "/api/v1/messages/{message_id}/feedback",
                 "/api/v1/openai/chat/completions", "/api/v1/openai/models"):
        assert path in schema


def test_openapi_documents_sources_answer_modes_and_steps(client):
    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)
    components = schema["components"]["schemas"]
    message = components["Message"]["properties"]
    assert "sources" in message and "answered_by" in message and "citations" in message
    source = components[message["sources"]["items"]["$ref"].rsplit("/", 1)[1]]["properties"]
    assert {"n", "chunk_id", "title", "page", "heading", "snippet", "url", "cited"} <= set(source)
    mode = json.dumps(components["Assistant"]["properties"]["answer_mode"])
    enum = components[mode.split("#/components/schemas/")[1].split('"')[0]]["enum"]
    assert set(enum) == {"extractive", "generative", "generative_fallback"}
    stream_doc = json.dumps(schema["paths"]["/api/v1/messages/{message_id}/stream"])
    assert "sources" in stream_doc and "writing" in stream_doc and "`step`" in stream_doc
    openai_doc = json.dumps(schema["paths"]["/api/v1/openai/chat/completions"])
    assert "sources" in openai_doc and "answered_by" in openai_doc


def test_usage_pages_name_assistants_and_conversations(tenant_a):
    """Billing can't import chat; chat registers how its ids are named on the usage pages."""
    from billing.labels import _resolvers
    from tests.factories.chat import AssistantFactory

    with tenant_scope(tenant_a.tenant):
        assistant = AssistantFactory(tenant=tenant_a.tenant, name="Support bot")
        names = _resolvers["assistant"](tenant_a.tenant, [assistant.pk, 987654])
    assert names == {assistant.pk: "Support bot"}
