"""Per-answer event streams in Redis: the worker appends, any web process relays (and can resume).

Each answer has one Redis stream. Entries carry a kind and a JSON payload:
  meta   {"message_id", "conversation_id", ..., "status"} when the answer is queued ("queued") and when a
                                                       worker starts it ("running")
  step   {"step": "searching"|"sources"|"writing", ...} progress before the text ("count", "mode")
  token  {"text": "..."}                               each delta, as the model sends it
  reset  {}                                            a redelivered task restarts the answer: drop text so far
  done   {"status": "done"|"stopped", "message": {...}} last entry of a finished answer
  error  {"code", "message", "status", "retry_after"?}  last entry of a failed answer
Entry ids are Redis stream ids, used as SSE event ids, so a reconnect with Last-Event-ID continues right after
the last event the client saw. A Stop request is a separate key the worker polls.
"""

from __future__ import annotations

import json
from functools import cache

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.retry
from django.conf import settings
from redis.backoff import EqualJitterBackoff

STREAM_TTL_S = 3600
# Readers block on XREAD for up to a few seconds; redis-py's default 5 s socket timeout would cut them off.
SOCKET_TIMEOUT_S = 30
FINAL_KINDS = ("done", "error")
# Redis may restart under running answers (a deploy, a crash). Every command then reconnects and tries again
# with backoff (0.05 s doubling to 1 s, jittered) for roughly 15-25 s before it raises, so the worker goes on
# publishing and readers go on reading after the last entry they saw, as if nothing had happened. redis-py's
# own default gives up after about 1.5 s.
OUTAGE_RETRIES = 30


def _backoff() -> EqualJitterBackoff:
    return EqualJitterBackoff(cap=1.0, base=0.05)


def stream_key(message_id: int) -> str:
    return f"ragdesk:chat:{message_id}:events"


def cancel_key(message_id: int) -> str:
    return f"ragdesk:chat:{message_id}:cancel"


# A client shared by many threads or tasks (a chat worker's hundreds of answers, a web process's streams) waits
# for one of this many connections instead of failing with "Too many connections" (redis-py's pools hold 100).
SHARED_CONNECTIONS = 50
SHARED_WAIT_S = 20


@cache
def client() -> redis.Redis:
    return redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=SHARED_CONNECTIONS, timeout=SHARED_WAIT_S,
        socket_timeout=SOCKET_TIMEOUT_S, retry=redis.retry.Retry(_backoff(), OUTAGE_RETRIES)))


def async_client(*, shared: bool = False) -> aioredis.Redis:
    """A client for the running event loop (asyncio clients can't be shared across loops); close it after use.
    `shared`: many tasks use it at once (they take turns on SHARED_CONNECTIONS connections)."""
    options = {"socket_timeout": SOCKET_TIMEOUT_S, "retry": redis.asyncio.retry.Retry(_backoff(), OUTAGE_RETRIES)}
    if shared:
        return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=SHARED_CONNECTIONS, timeout=SHARED_WAIT_S, **options))
    return aioredis.Redis.from_url(settings.REDIS_URL, **options)


def _fields(kind: str, data: dict | None) -> dict:
    return {"k": kind, "d": json.dumps(data or {}, ensure_ascii=False)}


def decode(entry) -> tuple[str, str, dict]:
    entry_id, fields = entry
    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    kind = fields[b"k"].decode()
    return entry_id, kind, json.loads(fields[b"d"])


# ------------------------------------------------------------------ sync side (tasks, views)

def publish(message_id: int, kind: str, data: dict | None = None) -> str:
    key = stream_key(message_id)
    pipe = client().pipeline(transaction=False)
    pipe.xadd(key, _fields(kind, data))
    pipe.expire(key, STREAM_TTL_S)
    entry_id = pipe.execute()[0]
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def start_run(message_id: int, *, run_id: str, restarted: bool, meta: dict) -> bool:
    """Record the run that owns the answer, publish `reset` (for a restarted run) and `meta`; True when a
    Stop was already requested."""
    key = stream_key(message_id)
    pipe = client().pipeline(transaction=False)
    pipe.set(run_key(message_id), run_id, ex=STREAM_TTL_S)
    if restarted:
        pipe.xadd(key, _fields("reset", {}))
    pipe.xadd(key, _fields("meta", meta))
    pipe.expire(key, STREAM_TTL_S)
    pipe.exists(cancel_key(message_id))
    return bool(pipe.execute()[-1])


def read(message_id: int, *, after: str = "0", block_ms: int | None = None, count: int = 500):
    response = client().xread({stream_key(message_id): after}, block=block_ms, count=count)
    return [decode(e) for _key, entries in response for e in entries] if response else []


def history(message_id: int) -> list[tuple[str, str, dict]]:
    return [decode(e) for e in client().xrange(stream_key(message_id))]


def text_so_far(message_id: int) -> str:
    """The answer's text as streamed so far (what a reader has seen)."""
    text = ""
    for _id, kind, data in history(message_id):
        if kind == "reset":
            text = ""
        elif kind == "token":
            text += data.get("text", "")
    return text


def exists(message_id: int) -> bool:
    return bool(client().exists(stream_key(message_id)))


def run_key(message_id: int) -> str:
    return f"ragdesk:chat:{message_id}:run"


def delete(message_id: int) -> None:
    client().delete(stream_key(message_id), cancel_key(message_id), run_key(message_id))


def request_cancel(message_id: int) -> None:
    client().set(cancel_key(message_id), "1", ex=STREAM_TTL_S)


def cancel_requested(message_id: int) -> bool:
    return bool(client().exists(cancel_key(message_id)))


# ------------------------------------------------------------------ async side (worker generation, SSE relay)

class AsyncStream:
    """One answer's stream for the current event loop."""

    def __init__(self, message_id: int, redis_client: aioredis.Redis | None = None):
        self.message_id = message_id
        self.key = stream_key(message_id)
        self.redis = redis_client or async_client()
        self._owns_client = redis_client is None  # a shared client (chat.stream_hub's) stays open
        self._text = ""  # the text this writer published, to restore a stream that lost its entries

    async def publish(self, kind: str, data: dict | None = None) -> str:
        # NOMKSTREAM: a stream that is gone is not silently started again with this entry alone.
        entry_id = await self.redis.xadd(self.key, _fields(kind, data), nomkstream=True)
        if kind == "token":
            self._text += (data or {}).get("text", "")
        elif kind == "reset":
            self._text = ""
        if entry_id is None:
            # Redis came back empty (restarted without its data) under this answer. Readers go on reading after
            # the last entry they saw: tell them to start over, with the whole text so far.
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(self.key, _fields("reset", {}))
            if self._text:
                pipe.xadd(self.key, _fields("token", {"text": self._text}))
            if kind not in ("token", "reset"):
                pipe.xadd(self.key, _fields(kind, data))
            pipe.expire(self.key, STREAM_TTL_S)
            entry_id = (await pipe.execute())[-2]
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id

    async def touch(self) -> None:
        await self.redis.expire(self.key, STREAM_TTL_S)

    async def read(self, *, after: str, block_ms: int | None, count: int = 500):
        response = await self.redis.xread({self.key: after}, block=block_ms, count=count)
        return [decode(e) for _key, entries in response for e in entries] if response else []

    async def history(self, *, until: str = "+"):
        return [decode(e) for e in await self.redis.xrange(self.key, "-", until)]

    async def exists(self) -> bool:
        return bool(await self.redis.exists(self.key))

    async def cancel_requested(self) -> bool:
        return bool(await self.redis.exists(cancel_key(self.message_id)))

    async def close(self) -> None:
        if self._owns_client:
            await self.redis.aclose()
