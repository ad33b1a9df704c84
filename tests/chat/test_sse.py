"""The SSE relay: ids resume without duplicates, expired streams are rebuilt, nothing waits forever."""

import pytest

from chat import pipeline, services, streams
from chat.models import Message
from tests.conftest import web_client

pytestmark = pytest.mark.django_db


def parse(body: bytes) -> list[dict]:
    """SSE text -> [{"id", "event", "data"}] (comments and retry lines skipped)."""
    import json

    events = []
    for block in body.decode().split("\n\n"):
        fields = {"data": []}
        for line in block.split("\n"):
            if not line or line.startswith(":") or line.startswith("retry:"):
                continue
            name, _sep, value = line.partition(": ")
            if name == "data":
                fields["data"].append(value)
            else:
                fields[name] = value
        if "event" in fields:
            fields["data"] = json.loads("\n".join(fields["data"]))
            events.append(fields)
    return events


@pytest.fixture
def finished(scope_a, assistant_a, docs, fake_llm, reply):
    docs.add("Refunds are possible within 30 days.")
    reply("Refunds take **30 days** [1].")
    _q, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, content="Refunds?",
                                       user=scope_a.owner)
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    answer.refresh_from_db()
    return answer


def stream(client, answer, **headers):
    response = client.get(f"/chat/messages/{answer.pk}/stream", **headers)
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    return parse(b"".join(response))


def test_stream_relays_every_event_with_ids(client_a, finished):
    events = stream(client_a, finished)
    assert [e["event"] for e in events][0] == "meta" and events[-1]["event"] == "done"
    text = "".join(e["data"]["text"] for e in events if e["event"] == "token")
    assert text == finished.content
    assert all(e.get("id") for e in events)
    assert events[-1]["data"]["message"]["status"] == "done"


def test_reconnect_with_last_event_id_resumes_without_duplicates(client_a, finished):
    events = stream(client_a, finished)
    tokens = [e for e in events if e["event"] == "token"]
    seen = tokens[:3]
    rest = stream(client_a, finished, HTTP_LAST_EVENT_ID=seen[-1]["id"])
    assert rest[0]["id"] > seen[-1]["id"]
    resumed = "".join(e["data"]["text"] for e in seen + [e for e in rest if e["event"] == "token"])
    assert resumed == finished.content
    assert rest[-1]["event"] == "done"


def test_browser_stream_sends_sanitised_html(client_a, finished):
    response = client_a.get(f"/chat/messages/{finished.pk}/stream?render=1")
    events = parse(b"".join(response))
    html = [e for e in events if e["event"] == "html"][-1]["data"]["html"]
    assert "<strong>30 days</strong>" in html


def test_expired_stream_is_rebuilt_from_the_database(client_a, finished):
    streams.delete(finished.pk)
    events = stream(client_a, finished, HTTP_LAST_EVENT_ID="1-0")
    assert [e["event"] for e in events] == ["reset", "token", "done"]
    assert events[1]["data"]["text"] == finished.content


def test_answer_no_worker_picks_up_fails_instead_of_hanging(client_a, scope_a, assistant_a, settings,
                                                            monkeypatch):
    settings.CHAT_QUEUE_TIMEOUT_S = 0
    monkeypatch.setattr("chat.sse.IDLE_BLOCK_MS", 50)
    _q, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, content="Anyone?",
                                       user=scope_a.owner)
    events = stream(client_a, answer)
    assert events[-1]["event"] == "error" and events[-1]["data"]["code"] == "no_worker"
    answer.refresh_from_db()
    assert answer.status == Message.Status.FAILED


def test_someone_elses_answer_is_404(finished, tenant_a):
    colleague = web_client(tenant_a.member, tenant_a.tenant)
    assert colleague.get(f"/chat/messages/{finished.pk}/stream").status_code == 404
    assert colleague.get(f"/chat/messages/{finished.pk}/").status_code == 404


def test_answer_whose_worker_died_fails_instead_of_hanging(client_a, scope_a, assistant_a, settings, monkeypatch):
    from chat.pipeline import AnswerRun

    settings.JOBS_STALE_AFTER_SECONDS = 0
    monkeypatch.setattr("chat.sse.IDLE_BLOCK_MS", 50)
    _q, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, content="Anyone?",
                                       user=scope_a.owner)
    run = AnswerRun(tenant=scope_a.tenant, message_id=answer.pk)
    assert run.claim()  # a worker took it, then died without a word
    streams.publish(answer.pk, "token", {"text": "half"})
    events = stream(client_a, answer)
    assert events[-1]["event"] == "error" and events[-1]["data"]["code"] == "interrupted"
    answer.refresh_from_db()
    assert answer.status == Message.Status.FAILED and answer.content == "half"  # what was shown is kept
    assert run._save(content="late write") is False  # a worker that was only slow can't overwrite it


def test_stream_clients_outlast_the_longest_blocking_read():
    """An idle reader blocks on XREAD for IDLE_BLOCK_MS; a socket timeout at or below it crashed the relay."""
    import asyncio

    from chat.sse import IDLE_BLOCK_MS

    sync_timeout = streams.client().connection_pool.connection_kwargs["socket_timeout"]

    async def async_timeout():
        redis_client = streams.async_client()
        try:
            return redis_client.connection_pool.connection_kwargs["socket_timeout"]
        finally:
            await redis_client.aclose()

    assert min(sync_timeout, asyncio.run(async_timeout())) > IDLE_BLOCK_MS / 1000
