"""Relaying an answer's Redis stream to HTTP clients as server-sent events.

`answer_events` is the core: it yields the stream's entries from a position on (every kind, the worker's
`step` progress events included), waits while the worker is busy, and ends after `done` or `error`. It never
hangs: when the stream is gone (expired) it rebuilds the end from the database, and an answer no worker picked up
in time, or whose worker died, is failed with a clear message right away (the job sweep for that one answer,
chat.answer_jobs, rather than waiting for the beat's). The SSE ids are the Redis entry ids, so EventSource's
Last-Event-ID resumes exactly after the last event a client saw.

The generators run after the request's middleware returned, so they set the tenant scope themselves. They wait
on Redis, never on a database connection: each database look-up takes a connection and gives it back at once
(`_db`), since a web process has only a few pooled connections and hundreds of streams may be open. A database
that is briefly unreachable skips a look-up; Redis going away for longer than its clients' retries (chat.streams)
ends the stream with the answer's saved end when it has one, else with a clear `stream_unavailable` error.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator

import redis
from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.utils import translation
from django.utils.translation import gettext as _

from accounts.tenancy import tenant_scope
from chat import rendering, stream_hub, streams
from chat.answer_jobs import answer_overdue, answer_sweep
from chat.models import Message
from chat.payloads import message_payload
from config.connections import release_connection

log = logging.getLogger(__name__)
IDLE_BLOCK_MS = 5000
_STREAM_ID = re.compile(r"\d{1,19}(-\d{1,19})?")  # what Redis takes as a stream id (each part < 2**64)
HEARTBEAT_S = 15
STALE_FINAL_S = 5


def sse(event: str, data: dict | str, event_id: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"id: {event_id}\n" if event_id else ""
    body = "".join(f"data: {line}\n" for line in payload.split("\n"))
    return f"{head}event: {event}\n{body}\n"


def _released(fn, *args):
    try:
        return fn(*args)
    finally:
        release_connection()


async def _db(fn, *args):
    """`fn(*args)` in the request's thread (the one that holds its transaction in tests), and its database
    connection handed back right after."""
    return await sync_to_async(_released)(fn, *args)


def _load(tenant, message_id: int) -> Message | None:
    with tenant_scope(tenant):
        return Message.objects.filter(pk=message_id).first()


async def _load_or_none(tenant, message_id: int) -> tuple[bool, Message | None]:
    """(looked up, message): a database that can't be reached now (pool full, restarting) is not fatal to a
    stream that is only checking on its answer; the look-up is skipped and tried again later."""
    try:
        return True, await _db(_load, tenant, message_id)
    except DatabaseError as exc:
        log.warning("answer %s: database look-up skipped (%s)", message_id, exc)
        return False, None


def _stream_lost(message_id: int) -> tuple[None, str, dict]:
    return None, "error", {"code": "stream_unavailable", "status": 503, "retry_after": 5, "message": _(
        "The connection to this answer's live stream was lost. Reload in a moment to see the answer.")}


def _final_events(message: Message, *, replay_text: bool) -> list[tuple[str | None, str, dict]]:
    """The end of an answer rebuilt from the database (its stream expired or never had the final entry)."""
    events: list[tuple[str | None, str, dict]] = []
    if replay_text:
        events.append((None, "reset", {}))
        if message.content:
            events.append((None, "token", {"text": message.content}))
    if message.status == Message.Status.FAILED:
        events.append((None, "error", {"code": message.error_code or "failed", "message": message.error,
                                       "status": 500 if message.error_code == "internal_error" else 502}))
    else:
        events.append((None, "done", {"status": message.status, "message": message_payload(message)}))
    return events


async def answer_events(*, tenant, message_id: int, after: str = "0", tick_ms: int | None = None,
                        prelude: list | tuple = ()) -> AsyncIterator[tuple[str | None, str, dict]]:
    """(id, kind, data) from `after` on, until done/error. kind "ping": time to send a heartbeat;
    kind "tick": nothing arrived within tick_ms (when given). `prelude`: events the caller already read
    (they are yielded first, and reading continues after the last of them). An `after` that is no stream id
    (a client's garbled Last-Event-ID) reads from the start."""
    after = after if after and _STREAM_ID.fullmatch(after) else "0"
    for entry_id, kind, data in prelude:
        yield entry_id, kind, data
        after = entry_id or after
        if kind in streams.FINAL_KINDS:
            return
    hub = stream_hub.hub()
    stream = streams.AsyncStream(message_id, redis_client=hub.client)
    follower = None
    try:
        try:
            follower = await hub.follow(stream.key, after)
            async for event in _follow(tenant, message_id, stream, follower, tick_ms):
                yield event
        except redis.RedisError as exc:
            # Redis stayed away past every retry: end with what the database knows, else say so clearly.
            log.warning("answer %s: event stream unavailable (%s)", message_id, exc)
            _looked, message = await _load_or_none(tenant, message_id)
            if message is not None and message.is_final:
                for event in _final_events(message, replay_text=True):
                    yield event
            else:
                yield _stream_lost(message_id)
    finally:
        if follower is not None:
            follower.close()
        await stream.close()


async def _follow(tenant, message_id: int, stream: streams.AsyncStream, follower: stream_hub.Follower,
                  tick_ms: int | None):
    last_beat = last_check = time.monotonic()
    final_seen_at = None
    if not await stream.exists():  # finished long ago (stream expired) or not started: ask the database
        _looked, message = await _load_or_none(tenant, message_id)
        if message is not None and message.is_final and not await stream.exists():
            for event in _final_events(message, replay_text=True):
                yield event
            return
    while True:
        entries = await follower.read(tick_ms or IDLE_BLOCK_MS)
        for entry_id, kind, data in entries:
            yield entry_id, kind, data
            if kind in streams.FINAL_KINDS:
                return
        now = time.monotonic()
        if entries:
            last_beat = now
            continue
        if tick_ms:
            yield None, "tick", {}
        if now - last_beat >= HEARTBEAT_S:
            last_beat = now
            yield None, "ping", {}
        if tick_ms and now - last_check < IDLE_BLOCK_MS / 1000:
            continue
        last_check = now
        looked, message = await _load_or_none(tenant, message_id)
        if not looked:
            continue
        if message is None:
            yield None, "error", {"code": "not_found", "message": _("This answer was deleted."), "status": 404}
            return
        if message.is_final:
            final_seen_at = final_seen_at or now
            if not await stream.exists() or now - final_seen_at >= STALE_FINAL_S:
                for event in _final_events(message, replay_text=not await stream.exists()):
                    yield event
                return
        elif answer_overdue(message):  # no worker took it, or its worker died: the error event follows
            await _db(lambda: answer_sweep(tenant=tenant, answer_id=message_id))


async def text_before(message_id: int, until: str) -> str:
    """The answer text up to and including entry `until` (for a browser resuming a rendered stream)."""
    if not until or until == "0" or not _STREAM_ID.fullmatch(until):
        return ""
    stream = streams.AsyncStream(message_id)
    try:
        text = ""
        for _id, kind, data in await stream.history(until=until):
            if kind == "reset":
                text = ""
            elif kind == "token":
                text += data.get("text", "")
        return text
    finally:
        await stream.close()


async def sse_relay(*, tenant, message_id: int, after: str = "0", render: bool = False,
                    prelude: list | tuple = (), language: str | None = None) -> AsyncIterator[str]:
    """SSE for browsers and API clients: meta / step / token / reset / done / error, as the worker wrote them.
    With render (the browser): `html` events carry the sanitised answer so far, and `step` events also carry
    a `label` in the page's language."""
    yield "retry: 1000\n\n"
    text = await text_before(message_id, after) if render else ""
    dirty = False
    last_render = 0.0
    async for entry_id, kind, data in answer_events(tenant=tenant, message_id=message_id, after=after,
                                                    tick_ms=100 if render else None, prelude=prelude):
        if kind == "ping":
            yield ": keep-alive\n\n"
            continue
        final = kind in streams.FINAL_KINDS
        if render:
            if kind == "token":
                text += data.get("text", "")
                dirty = True
            elif kind == "reset":
                text, dirty = "", True
            elif kind == "done" and isinstance(data.get("message"), dict) and \
                    data["message"].get("content", text) != text:
                # The saved answer is the truth: tokens lost with a restarted Redis must not stay missing.
                text, dirty = data["message"]["content"], True
            now = time.monotonic()
            # Throttled to ~10 renders a second; whatever is pending goes out before the end.
            if dirty and (final or kind == "tick" or now - last_render >= 0.1):
                yield sse("html", {"html": rendering.sanitize_markdown(text)}, entry_id if not final else None)
                dirty, last_render = False, now
        if render and kind == "step":
            with translation.override(language):
                data = {**data, "label": rendering.step_label(data)}
        if kind != "tick":
            yield sse(kind, data, entry_id)
