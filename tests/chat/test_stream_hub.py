"""One XREAD per event loop for every followed answer stream (chat.stream_hub), on the real Redis."""

from __future__ import annotations

import asyncio
import uuid

from chat import stream_hub, streams
from tests.chat.test_sse import parse


def _key() -> str:
    return f"ragdesk:test:hub:{uuid.uuid4().hex}"


async def _add(client, key, n, start=0) -> list[str]:
    return [(await client.xadd(key, {"k": "token", "d": f'{{"text": "t{i}"}}'})).decode() for i in range(start, n)]


async def _texts(follower, want: int) -> list[str]:
    got = []
    while len(got) < want:
        entries = await follower.read(2000)
        assert entries, f"nothing after {got}"
        got += [data["text"] for _id, _kind, data in entries]
    return got


def test_followers_of_many_streams_share_one_reader_and_see_every_entry_once():
    async def main():
        hub = stream_hub.hub()
        writer = streams.async_client()
        keys = [_key() for _ in range(3)]
        try:
            followers = [await hub.follow(key, "0") for key in keys]
            for key in keys:
                await _add(writer, key, 5)
            assert [await _texts(f, 5) for f in followers] == [[f"t{i}" for i in range(5)]] * 3
            assert stream_hub.hub() is hub  # one hub for the loop while anyone follows
            for follower in followers:
                follower.close()
            await asyncio.sleep(0.1)
            assert hub.task.done() and stream_hub.hub() is not hub  # the last one out stops it
        finally:
            await writer.delete(*keys)
            await writer.aclose()
            await stream_hub.hub()._close()

    asyncio.run(main())


def test_a_follower_behind_another_on_the_same_stream_gets_what_it_missed():
    async def main():
        hub = stream_hub.hub()
        writer = streams.async_client()
        key = _key()
        try:
            ids = await _add(writer, key, 4)
            ahead = await hub.follow(key, ids[-1])  # resumed after the 4th entry
            await _add(writer, key, 6, start=4)
            assert await _texts(ahead, 2) == ["t4", "t5"]
            behind = await hub.follow(key, ids[1])  # resumed after the 2nd: t2..t5, then the rest with the others
            assert await _texts(behind, 4) == ["t2", "t3", "t4", "t5"]
            await _add(writer, key, 7, start=6)
            assert await _texts(ahead, 1) == await _texts(behind, 1) == ["t6"]
            ahead.close()
            behind.close()
        finally:
            await writer.delete(key)
            await writer.aclose()

    asyncio.run(main())


def test_a_garbled_last_event_id_replays_the_answer_and_breaks_no_other_stream(client_a, scope_a, assistant_a):
    from chat import services

    _q, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, content="Hi?",
                                       user=scope_a.owner)
    streams.publish(answer.pk, "token", {"text": "Hello"})
    streams.publish(answer.pk, "done", {"status": "done", "message": {"id": answer.pk, "content": "Hello"}})
    for bad in ("garbage", "1-2-3", "9" * 30):
        response = client_a.get(f"/chat/messages/{answer.pk}/stream?render=1", HTTP_LAST_EVENT_ID=bad)
        events = parse(b"".join(response))
        assert [e["event"] for e in events if e["event"] in ("token", "done")] == ["token", "done"]
