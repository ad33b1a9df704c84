"""Shared live state of model servers, in Redis so every web and worker process sees the same picture.

Per server id `sid`:
  l:<sid>     sorted set of slot leases (member = lease id, score = expiry ms): in-flight = live members.
              A process that dies leaves leases that expire, so slots never leak for good.
  cd:<sid>    present while the server cools down after failures (PX = cooldown).
  cdn:<sid>   how many cooldowns in a row (doubles the next one), reset by a success.
  fails:<sid> consecutive failures since the last success.
  srv:<sid>   hash from health checks: models (JSON), version, checked_at, check_error, ok_total, fail_total.
  ld:<sid>    set of models known loaded in memory (/api/ps, or a recent success), short TTL.
  lat:<sid>   recent latencies "ttft_ms duration_ms" (newest first, capped).
  err:<sid>   recent errors as JSON {t, msg} (newest first, capped).
Queues: q:<pool>|<model> (least busy: one queue per pool and model), q:s:<sid> (round robin / random: the
request waits for the server it was assigned), each a sorted set of tickets by arrival time.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import os
import random
import time
import uuid
import weakref
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from django.conf import settings

from llm import conf

logger = logging.getLogger(__name__)

LATENCY_SAMPLES = 50
ERROR_SAMPLES = 20
LOADED_TTL_S = 300
LEASE_TTL_S = 120.0
QUEUE_POLL_S = 0.05


def key(*parts: str) -> str:
    return settings.LLM_REDIS_PREFIX + ":".join(parts)


# --- clients --------------------------------------------------------------------------------------------------

_sync_clients: dict[tuple[int, str], redis.Redis] = {}
# One client serves every answer of a process (a threaded chat worker runs hundreds at once): callers wait for a
# free connection, where redis-py's default pool refuses its 101st command with "Too many connections".
SHARED_POOL = {"max_connections": 50, "timeout": 20}


def sync_redis() -> redis.Redis:
    url = settings.REDIS_URL
    k = (os.getpid(), url)
    client = _sync_clients.get(k)
    if client is None:
        client = redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(url, socket_connect_timeout=2,
                                                                               socket_timeout=5, **SHARED_POOL))
        _sync_clients[k] = client
    return client


# Async clients (Redis, httpx) belong to one event loop; chat_sync runs a fresh loop per call.
_loop_resources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def loop_resource(name: str, factory):
    loop = asyncio.get_running_loop()
    resources = _loop_resources.setdefault(loop, {})
    value = resources.get(name)
    if value is None:
        value = resources[name] = factory()
    return value


async def close_loop_resources() -> None:
    """Close this loop's clients (chat_sync / embed_sync call it before their loop ends)."""
    loop = asyncio.get_running_loop()
    resources = _loop_resources.pop(loop, {})
    for value in resources.values():
        closer = getattr(value, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                await closer()


def async_redis() -> aioredis.Redis:
    return loop_resource(
        "redis", lambda: aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5, **SHARED_POOL))
    )


def _waiters() -> dict[str, list]:
    return loop_resource("waiters", dict)


def _notify(*wait_keys: str) -> None:
    """A slot was freed: wake the longest-waiting local waiter of each key, not the whole herd. (Releases in
    other processes, and a waiter that lost the slot to another process, are covered by polling.)"""
    waiters = _waiters()
    for wait_key in wait_keys:
        line = waiters.get(wait_key)
        while line:
            _arrival, _seq, future = line.pop(0)
            if not future.done():
                future.set_result(True)
                break


_seq = itertools.count()


async def _wait_for_release(wait_key: str, timeout: float, *, arrival: float) -> bool:
    """Sleep until a local release wakes us or `timeout` passes. Local waiters wake in arrival order."""
    future = asyncio.get_running_loop().create_future()
    entry = (arrival, next(_seq), future)
    line = _waiters().setdefault(wait_key, [])
    bisect.insort(line, entry, key=lambda e: (e[0], e[1]))
    try:
        await asyncio.wait_for(future, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        with contextlib.suppress(ValueError):
            line.remove(entry)


# --- slots ----------------------------------------------------------------------------------------------------

ACQUIRE_LUA = """
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local lease = ARGV[3]
local lease_exp = tonumber(ARGV[4])
local ticket = ARGV[5]
local tscore = tonumber(ARGV[6])
local stale = tonumber(ARGV[7])
local max_queue = tonumber(ARGV[8])
local strategy = ARGV[9]
local rnd = tonumber(ARGV[10])
local pinned = ARGV[11]
local poolq = ARGV[12]
local n = tonumber(ARGV[13])
local healthy = {}
for i = 1, n do
  local b = 13 + (i - 1) * 4
  local sid = ARGV[b + 1]
  if redis.call('EXISTS', prefix .. 'cd:' .. sid) == 0 then
    local lk = prefix .. 'l:' .. sid
    redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
    table.insert(healthy, {sid = sid, slots = tonumber(ARGV[b + 2]), weight = tonumber(ARGV[b + 3]),
                           loaded = tonumber(ARGV[b + 4]), inflight = redis.call('ZCARD', lk)})
  end
end
if #healthy == 0 then
  redis.call('ZREM', poolq, ticket)
  if pinned ~= '' then redis.call('ZREM', prefix .. 'q:s:' .. pinned, ticket) end
  return {'none', ''}
end
local scope = healthy
local qkey = poolq
if strategy ~= 'least_busy' then
  local chosen = nil
  for _, s in ipairs(healthy) do if s.sid == pinned then chosen = s end end
  if chosen == nil then
    local total = 0
    for _, s in ipairs(healthy) do total = total + s.weight end
    local point
    if strategy == 'round_robin' then
      point = (redis.call('INCR', poolq .. ':rr') - 1) % total
    else
      point = rnd * total
    end
    local acc = 0
    for _, s in ipairs(healthy) do
      acc = acc + s.weight
      if point < acc then chosen = s break end
    end
    if chosen == nil then chosen = healthy[#healthy] end
    -- reassigned (the old server went into cooldown): leave its queue
    if pinned ~= '' then redis.call('ZREM', prefix .. 'q:s:' .. pinned, ticket) end
  end
  scope = {chosen}
  pinned = chosen.sid
  qkey = prefix .. 'q:s:' .. pinned
end
local free = 0
for _, s in ipairs(scope) do
  if s.slots > s.inflight then free = free + (s.slots - s.inflight) end
end
redis.call('ZREMRANGEBYSCORE', qkey, '-inf', stale)
local rank = redis.call('ZRANK', qkey, ticket)
if not rank then
  local waiting = redis.call('ZCARD', qkey)
  if waiting >= free and waiting >= max_queue then return {'full', pinned} end
  redis.call('ZADD', qkey, tscore, ticket)
  redis.call('PEXPIRE', qkey, 3600000)
  rank = redis.call('ZRANK', qkey, ticket)
end
if rank < free then
  local best, bestkey = nil, nil
  for _, s in ipairs(scope) do
    if s.inflight < s.slots then
      local k = (1 - s.loaded) * 10 + (s.inflight + 1) / (s.slots * s.weight)
      if best == nil or k < bestkey then best = s bestkey = k end
    end
  end
  redis.call('ZADD', prefix .. 'l:' .. best.sid, lease_exp, lease)
  redis.call('PEXPIRE', prefix .. 'l:' .. best.sid, 86400000)
  redis.call('ZREM', qkey, ticket)
  return {'ok', best.sid}
end
return {'wait', pinned}
"""

FAILURE_LUA = """
local f = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 600000)
redis.call('LPUSH', KEYS[4], ARGV[5])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
redis.call('HINCRBY', KEYS[5], 'fail_total', 1)
if ARGV[2] == '1' or f >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then return left end
  local n = redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 3600000)
  local ms = math.floor(math.min(tonumber(ARGV[3]) * 2 ^ (n - 1), tonumber(ARGV[4])))
  redis.call('SET', KEYS[2], ARGV[6], 'PX', ms)
  redis.call('DEL', KEYS[1])
  return ms
end
return 0
"""


class NoHealthyServer(Exception):
    """Every candidate server is cooling down."""


class QueueFull(Exception):
    """Too many requests already wait for this pool."""


class QueueTimeout(Exception):
    """No slot freed up within the pool's queue timeout."""


@dataclass
class Candidate:
    sid: str
    slots: int
    weight: float = 1.0
    loaded: bool = True


@dataclass
class Lease:
    """A slot held on server `sid`. While held, a background task keeps the lease alive (a process that dies
    stops renewing, so its slot frees itself after LEASE_TTL_S)."""

    sid: str
    lease_id: str
    pool_key: str
    keeper: asyncio.Task | None = None

    def start_keeping(self) -> None:
        self.keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        lease_key = key("l", self.sid)
        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            with contextlib.suppress(Exception):
                await async_redis().zadd(lease_key, {self.lease_id: (time.time() + LEASE_TTL_S) * 1000}, xx=True)

    def stop_keeping(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
            self.keeper = None


def _scripts():
    return loop_resource(
        "scripts",
        lambda: {
            "acquire": async_redis().register_script(ACQUIRE_LUA),
            "failure": async_redis().register_script(FAILURE_LUA),
        },
    )


async def acquire(*, pool_key: str, candidates: list[Candidate], strategy: str, queue_timeout_s: float,
                  max_queue: int) -> Lease:
    """Take a slot on one candidate, waiting in the pool's queue (FIFO) up to `queue_timeout_s`."""
    script = _scripts()["acquire"]
    prefix = settings.LLM_REDIS_PREFIX
    ticket = uuid.uuid4().hex
    lease_id = uuid.uuid4().hex
    arrival_ms = time.time() * 1000
    deadline = time.monotonic() + queue_timeout_s
    poolq = key("q", pool_key)
    pinned = ""
    flat: list = []
    for c in candidates:
        flat += [c.sid, c.slots, c.weight, 1 if c.loaded else 0]
    try:
        while True:
            now_ms = time.time() * 1000
            status, sid = await script(args=[
                prefix, now_ms, lease_id, now_ms + LEASE_TTL_S * 1000, ticket, arrival_ms,
                now_ms - (queue_timeout_s + 30) * 1000, max_queue, strategy, random.random(), pinned, poolq,
                len(candidates), *flat,
            ])
            status, sid = status.decode(), sid.decode()
            if status == "ok":
                lease = Lease(sid=sid, lease_id=lease_id, pool_key=pool_key)
                lease.start_keeping()
                return lease
            if status == "none":
                raise NoHealthyServer()
            if status == "full":
                raise QueueFull()
            pinned = sid
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QueueTimeout()
            await _wait_for_release(pinned or pool_key, min(remaining, QUEUE_POLL_S), arrival=arrival_ms)
    except BaseException:
        # Leave the queue (a timeout, a cancelled caller): best effort, stale tickets also expire.
        try:
            pipe = async_redis().pipeline(transaction=False)
            pipe.zrem(poolq, ticket)
            if pinned:
                pipe.zrem(key("q", "s", pinned), ticket)
            await asyncio.shield(pipe.execute())
        except Exception:  # noqa: BLE001
            pass
        raise


async def release(lease: Lease, *, ok: bool | None = None, ttft_ms: float | None = None,
                  duration_ms: float | None = None, model: str = "") -> None:
    """Give the slot back; with ok=True also note the latency and that `model` is loaded there."""
    lease.stop_keeping()
    try:
        await _release(lease, ok=ok, ttft_ms=ttft_ms, duration_ms=duration_ms, model=model)
    except redis.RedisError as exc:  # the lease expires by itself; an answer must not fail over bookkeeping
        logger.warning("llm: could not release a slot on %s: %s", lease.sid, exc)
    finally:
        _notify(lease.pool_key, lease.sid)


async def _release(lease: Lease, *, ok, ttft_ms, duration_ms, model) -> None:
    pipe = async_redis().pipeline(transaction=False)
    pipe.zrem(key("l", lease.sid), lease.lease_id)
    if ok:
        pipe.delete(key("fails", lease.sid), key("cdn", lease.sid))
        pipe.lpush(key("lat", lease.sid), f"{ttft_ms or 0:.1f} {duration_ms or 0:.1f}")
        pipe.ltrim(key("lat", lease.sid), 0, LATENCY_SAMPLES - 1)
        pipe.hincrby(key("srv", lease.sid), "ok_total", 1)
        if model:
            pipe.sadd(key("ld", lease.sid), model)
            pipe.expire(key("ld", lease.sid), LOADED_TTL_S)
    await asyncio.shield(pipe.execute())


async def record_failure(sid: str, message: str, *, immediate: bool) -> float:
    """Note a failure; put the server in cooldown at once (connection refused) or after repeated failures.
    Returns the cooldown in ms (0 when none started)."""
    base = settings.LLM_COOLDOWN_BASE_S * 1000
    cap = settings.LLM_COOLDOWN_MAX_S * 1000
    error = json.dumps({"t": time.time(), "msg": message[:300]})
    try:
        return await _scripts()["failure"](
            keys=[key("fails", sid), key("cd", sid), key("cdn", sid), key("err", sid), key("srv", sid)],
            args=[settings.LLM_FAILURES_BEFORE_COOLDOWN, "1" if immediate else "0", base, cap, error,
                  message[:200], ERROR_SAMPLES],
        )
    except redis.RedisError as exc:
        logger.warning("llm: could not note a failure of %s: %s", sid, exc)
        return 0


def record_failure_sync(sid: str, message: str, *, immediate: bool) -> None:
    r = sync_redis()
    base = settings.LLM_COOLDOWN_BASE_S * 1000
    cap = settings.LLM_COOLDOWN_MAX_S * 1000
    error = json.dumps({"t": time.time(), "msg": message[:300]})
    r.register_script(FAILURE_LUA)(
        keys=[key("fails", sid), key("cd", sid), key("cdn", sid), key("err", sid), key("srv", sid)],
        args=[settings.LLM_FAILURES_BEFORE_COOLDOWN, "1" if immediate else "0", base, cap, error, message[:200],
              ERROR_SAMPLES],
    )


# What a health check concluded (services.probe_outcome): only "down" and "failed" count against the server.
PROBE_OK, PROBE_BUSY, PROBE_CLIENT, PROBE_DOWN, PROBE_FAILED = "ok", "busy", "client", "down", "failed"


def record_probe_sync(sid: str, *, models: list[str] | None, loaded: list[str] | None, version: str = "",
                      error: str = "", outcome: str | None = None, n_ctx: int | None = None) -> None:
    """Store what a health check found. A passing check ends any cooldown (the server was re-probed).

    outcome: ok; busy (it did not answer in time while generating for us, or said it is busy: alive, nothing
    counted); client (it refused the check itself, e.g. a wrong key: shown, never a cooldown); down (nothing
    answered: cooldown at once); failed (counts like a failed request). Without an outcome an error means down.
    """
    outcome = outcome or (PROBE_DOWN if error else PROBE_OK)
    r = sync_redis()
    pipe = r.pipeline(transaction=False)
    fields = {"checked_at": time.time(), "check_error": "" if outcome == PROBE_BUSY else error[:300],
              "version": version, "check_outcome": outcome}
    if models is not None:
        fields["models"] = json.dumps(sorted(set(models)))
    if n_ctx:
        fields["n_ctx"] = n_ctx
    pipe.hset(key("srv", sid), mapping=fields)
    if outcome == PROBE_OK:
        pipe.delete(key("cd", sid), key("fails", sid), key("cdn", sid))
        if loaded is not None:
            pipe.delete(key("ld", sid))
            if loaded:
                pipe.sadd(key("ld", sid), *loaded)
                pipe.expire(key("ld", sid), LOADED_TTL_S)
    pipe.execute()
    if outcome in (PROBE_DOWN, PROBE_FAILED):
        record_failure_sync(sid, error, immediate=outcome == PROBE_DOWN)


async def inflight(sid: str) -> int:
    """Live slot leases on the server (requests it is working on for this deployment)."""
    return int(await async_redis().zcount(key("l", sid), time.time() * 1000, "+inf"))


# --- discovery info -------------------------------------------------------------------------------------------

_info_cache: dict[str, tuple[float, set[str] | None, set[str]]] = {}
INFO_CACHE_S = 2.0


async def servers_models(sids: list[str]) -> dict[str, tuple[set[str] | None, set[str]]]:
    """For each server: (models it serves or None if never discovered, models loaded)."""
    now = time.monotonic()
    result: dict[str, tuple[set[str] | None, set[str]]] = {}
    missing = []
    for sid in sids:
        cached = _info_cache.get(sid)
        if cached and now - cached[0] < INFO_CACHE_S:
            result[sid] = (cached[1], cached[2])
        else:
            missing.append(sid)
    if missing:
        pipe = async_redis().pipeline(transaction=False)
        for sid in missing:
            pipe.hget(key("srv", sid), "models")
            pipe.smembers(key("ld", sid))
        values = await pipe.execute()
        for i, sid in enumerate(missing):
            raw, loaded = values[2 * i], values[2 * i + 1]
            models = set(json.loads(raw)) if raw else None
            loaded_set = {m.decode() for m in loaded}
            _info_cache[sid] = (now, models, loaded_set)
            result[sid] = (models, loaded_set)
    return result


def forget_cached_info(sid: str | None = None) -> None:
    if sid is None:
        _info_cache.clear()
    else:
        _info_cache.pop(sid, None)


async def store_models(sid: str, models: list[str], loaded: list[str] | None = None) -> None:
    pipe = async_redis().pipeline(transaction=False)
    pipe.hset(key("srv", sid), mapping={"models": json.dumps(sorted(set(models)))})
    if loaded:
        pipe.sadd(key("ld", sid), *loaded)
        pipe.expire(key("ld", sid), LOADED_TTL_S)
    await pipe.execute()
    forget_cached_info(sid)


# --- snapshots for the status page ----------------------------------------------------------------------------

def server_snapshot(sid: str, *, pinned_queue: bool = True) -> dict:
    r = sync_redis()
    now_ms = time.time() * 1000
    pipe = r.pipeline(transaction=False)
    pipe.zcount(key("l", sid), now_ms, "+inf")
    pipe.pttl(key("cd", sid))
    pipe.hgetall(key("srv", sid))
    pipe.smembers(key("ld", sid))
    pipe.lrange(key("lat", sid), 0, LATENCY_SAMPLES - 1)
    pipe.lrange(key("err", sid), 0, 4)
    pipe.get(key("fails", sid))
    pipe.zcard(key("q", "s", sid))
    inflight, cooldown_ms, info, loaded, lat, errs, fails, waiting = pipe.execute()
    info = {k.decode(): v.decode() for k, v in info.items()}
    durations = sorted(float(x.split()[1]) for x in (v.decode() for v in lat))
    ttfts = sorted(float(x.split()[0]) for x in (v.decode() for v in lat))
    errors = []
    for raw in errs:
        try:
            errors.append(json.loads(raw))
        except ValueError:
            continue
    return {
        "inflight": int(inflight),
        "cooldown_s": round(cooldown_ms / 1000, 1) if cooldown_ms and cooldown_ms > 0 else 0,
        "models": json.loads(info["models"]) if info.get("models") else None,
        "loaded": sorted(m.decode() for m in loaded),
        "version": info.get("version", ""),
        "checked_at": float(info["checked_at"]) if info.get("checked_at") else None,
        "check_error": info.get("check_error", ""),
        "check_outcome": info.get("check_outcome", ""),
        "context_window": int(info["n_ctx"]) if info.get("n_ctx") else None,
        "ok_total": int(info.get("ok_total", 0)),
        "fail_total": int(info.get("fail_total", 0)),
        "consecutive_failures": int(fails or 0),
        "latency_p50_ms": durations[len(durations) // 2] if durations else None,
        "ttft_p50_ms": ttfts[len(ttfts) // 2] if ttfts else None,
        "errors": errors,
        "waiting": int(waiting) if pinned_queue else 0,
    }


def queue_length(pool_key: str) -> int:
    r = sync_redis()
    total = 0
    for name in r.scan_iter(match=key("q", pool_key) + "*", count=100):
        if not name.decode().endswith(":rr"):
            total += r.zcard(name)
    return total


def reset_all() -> None:
    """Delete every gateway key under the prefix (tests, `llm_status --reset`)."""
    r = sync_redis()
    names = list(r.scan_iter(match=settings.LLM_REDIS_PREFIX + "*", count=500))
    if names:
        r.delete(*names)
    forget_cached_info()
    conf.forget_cached_runtime()
