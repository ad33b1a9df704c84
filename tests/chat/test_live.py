"""Against a live ASGI server with a chat worker: the official openai client, SSE disconnect/resume and Stop."""

import json

import httpx
import openai
import pytest

from accounts.services import api_key_create
from billing.errors import QuotaExceeded
from chat.models import Assistant, Message
from tests.chat.live import live_stack
from tests.chat.test_sse import parse
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
REPLY = "Refunds are possible within 30 days [1]."


@pytest.fixture
def server(assistant_a, docs, reply):
    docs.add("Refunds are possible within 30 days of purchase.", title="Refund policy", page=3)
    reply(REPLY)
    with live_stack() as url:
        yield url


@pytest.fixture
def oai(server, tenant_a):
    return openai.OpenAI(base_url=f"{server}/api/v1/openai", api_key=tenant_a.api_key, max_retries=0, timeout=30)


def test_openai_client_non_streaming(oai, assistant_a, docs):
    assert assistant_a.name in [m.id for m in oai.models.list().data]
    completion = oai.chat.completions.create(
        model=assistant_a.name, messages=[{"role": "user", "content": "What is the refund window?"}])
    assert completion.object == "chat.completion" and completion.model == assistant_a.name
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 7 and completion.usage.prompt_tokens > 0
    citations = completion.model_extra["citations"]
    assert citations[0]["chunk_id"] == docs.hits[0].chunk_id and citations[0]["title"] == "Refund policy"
    # model may also be the assistant's id; earlier turns become history.
    follow_up = oai.chat.completions.create(model=str(assistant_a.pk), messages=[
        {"role": "system", "content": "ignored"}, {"role": "user", "content": "Refunds?"},
        {"role": "assistant", "content": "30 days [1]."}, {"role": "user", "content": "And for gifts?"}])
    assert follow_up.choices[0].message.content == REPLY
    answer = Message.objects.get(pk=follow_up.model_extra["ragdesk"]["message_id"])
    assert answer.conversation.messages.count() == 4


def test_openai_client_streaming(oai, assistant_a, docs):
    stream = oai.chat.completions.create(
        model=assistant_a.name, messages=[{"role": "user", "content": "What is the refund window?"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 7  # token by token
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    assert final.choices[0].finish_reason == "stop"
    assert final.model_extra["citations"][0]["chunk_id"] == docs.hits[0].chunk_id
    assert chunks[-1].usage.completion_tokens == 7 and chunks[-1].choices == []


def test_openai_client_errors(oai, server, tenant_a, assistant_a, monkeypatch, fake_llm):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-assistant", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model=assistant_a.name, temperature=5,
                                    messages=[{"role": "user", "content": "hi"}])
    assert "temperature" in str(bad.value)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=assistant_a.name, messages=[{"role": "assistant", "content": "hi"}])
    _key, raw = api_key_create(tenant=tenant_a.tenant, name="reader", scopes=["read"])
    reader = openai.OpenAI(base_url=f"{server}/api/v1/openai", api_key=raw, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        reader.chat.completions.create(model=assistant_a.name, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/api/v1/openai", api_key="rdk_bad_" + "x" * 30, max_retries=0
                      ).models.list()

    Assistant.objects.filter(pk=assistant_a.pk).update(answer_mode="generative")  # no quoting fallback
    fake_llm.fail("http500")
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as down:
            oai.chat.completions.create(model=assistant_a.name, stream=stream,
                                        messages=[{"role": "user", "content": "hi"}])
        assert down.value.status_code == 503
    fake_llm.heal()

    async def over_quota(**kwargs):
        raise QuotaExceeded("Monthly token allowance used up.", limit="monthly_tokens", retry_after_s=60)
        yield  # pragma: no cover

    monkeypatch.setattr("chat.llm.answer_stream", over_quota)
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(model=assistant_a.name, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.response.headers["Retry-After"] == "60"


def sse_events(response) -> list[dict]:
    return parse(b"".join(response.iter_bytes()))


def test_disconnect_does_not_stop_the_answer_and_reconnect_resumes(server, tenant_a, assistant_a, fake_llm):
    fake_llm.configure(token_rate=40, reply_tokens=7)
    headers = {"Authorization": f"Bearer {tenant_a.api_key}"}
    seen = []
    with httpx.Client(base_url=server, headers=headers, timeout=30) as http:
        with http.stream("POST", f"/api/v1/assistants/{assistant_a.pk}/chat",
                         json={"message": "What is the refund window?", "stream": True}) as response:
            assert response.status_code == 200
            buffer = ""
            for chunk in response.iter_text():
                buffer += chunk
                seen = parse(buffer.rsplit("\n\n", 1)[0].encode() + b"\n\n") if "\n\n" in buffer else []
                if len([e for e in seen if e["event"] == "token"]) >= 2:
                    break  # the client goes away mid-answer
        message_id = seen[0]["data"]["message_id"]
        answer = wait_for(lambda: Message.objects.filter(pk=message_id, status="done").first(), timeout=30)
        assert answer.content == REPLY  # finished and saved without anyone listening

        last = seen[-1]["id"]
        with http.stream("GET", f"/api/v1/messages/{message_id}/stream", headers={"Last-Event-ID": last}) as again:
            rest = sse_events(again)
    tokens = [e["data"]["text"] for e in seen + rest if e["event"] == "token"]
    assert "".join(tokens) == REPLY  # nothing lost, nothing twice
    assert rest[-1]["event"] == "done"


def test_stop_ends_a_long_answer_and_keeps_the_partial_text(server, tenant_a, assistant_a, fake_llm, reply):
    reply(" ".join(f"w{i}" for i in range(2000)))
    fake_llm.configure(token_rate=20)  # the whole answer would take 100 s
    headers = {"Authorization": f"Bearer {tenant_a.api_key}"}
    http = httpx.Client(base_url=server, headers=headers, timeout=30)
    with http, http.stream("POST", f"/api/v1/assistants/{assistant_a.pk}/chat",
                           json={"message": "Tell me everything", "stream": True}) as response:
        events, buffer, stopped = [], "", False
        for chunk in response.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                events += parse(block.encode() + b"\n\n")
            tokens = [e for e in events if e["event"] == "token"]
            if len(tokens) >= 3 and not stopped:
                message_id = events[0]["data"]["message_id"]
                assert http.post(f"/api/v1/messages/{message_id}/stop").status_code == 202
                stopped = True
        # The stream ended by itself after the stop.
    done = events[-1]
    assert done["event"] == "done" and done["data"]["status"] == "stopped"
    answer = Message.objects.get(pk=done["data"]["message"]["id"])
    assert answer.status == Message.Status.STOPPED
    assert answer.content.startswith("w0 w1 w2") and len(answer.content.split()) < 2000
    assert json.loads(json.dumps(done["data"]))["message"]["content"] == answer.content


def test_openai_client_gets_a_quoted_answer_with_citations_and_sources(oai, tenant_a, docs):
    from chat.services import assistant_create

    quoting = assistant_create(tenant=tenant_a.tenant, name="Quoter", answer_mode="extractive")
    completion = oai.chat.completions.create(
        model=quoting.name, messages=[{"role": "user", "content": "What is the refund window?"}])
    text = completion.choices[0].message.content
    assert "> Refunds are possible within 30 days of purchase. [1]" in text
    assert completion.model_extra["citations"][0]["chunk_id"] == docs.hits[0].chunk_id
    assert [s["chunk_id"] for s in completion.model_extra["sources"]] == [docs.hits[0].chunk_id]
    assert completion.usage.prompt_tokens == 0 and completion.usage.completion_tokens == 0

    chunks = list(oai.chat.completions.create(
        model=quoting.name, messages=[{"role": "user", "content": "What is the refund window?"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    assert final.model_extra["citations"][0]["n"] == 1
