"""LLM gateway pool benchmark (issue: LLM gateway). Run: scripts/env-run python bench/pool.py [--smoke]

Fake Ollama servers (tests/support/ollama_fake.py) run as separate processes at a fixed token rate; the
gateway runs here, with its real Redis slot accounting. The billing ledger is replaced by no-ops so this
measures the gateway itself (bench/metering.py measures the ledger).

  1. throughput   60 concurrent requests on 1 vs 3 single-slot servers          target ratio >= 2.8
  2. balancing    one server 3x slower; p95 latency, least busy vs round robin   target ratio <= 0.7
  3. failover     kill 1 of 3 servers during 200 requests                         target 0 failed before a token,
                                                                                  dead server out within 2 s
  4. overhead     p50 latency through the gateway minus calling the server directly   target <= 5 ms

--smoke: a tenth of the requests (seconds; the ratios are then rough), database ragdesk_bench_pool_smoke.

Prints a table, then (last line) JSON with throughput_ratio_3v1, p95_ratio_leastbusy_vs_roundrobin,
failover_failed_requests, failover_out_of_rotation_s, overhead_p50_ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from unittest import mock

from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import smoke_requested

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SMOKE = smoke_requested(__doc__)
use_bench_database("ragdesk_bench_pool", smoke=SMOKE)  # the gateway reads settings and models from it

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402

from accounts.models import Tenant  # noqa: E402
from billing.types import UsageContext  # noqa: E402
from llm import gateway, registry, state  # noqa: E402
from llm.types import ChatRequest, ChatResult, LLMError, StreamInterrupted  # noqa: E402
from tests.support.fixtures import pool_spec  # noqa: E402
from tests.support.ollama_fake import FakeOllamaProcess  # noqa: E402

TENANT = Tenant(id=None, name="bench", slug="bench")
BURST = 6 if SMOKE else 60  # requests per throughput / balancing burst
FAILOVER_REQUESTS, KILL_AFTER_S = (40, 0.3) if SMOKE else (200, 1.5)
OVERHEAD_CALLS, OVERHEAD_WARMUP = (20, 3) if SMOKE else (400, 20)
REQUEST = ChatRequest(messages=[{"role": "user", "content": "Say a few words about load balancing."}])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def one_call(target: str, *, started_at: float | None = None) -> dict:
    """-> {ok, latency, got_token, error}"""
    t0 = started_at if started_at is not None else time.perf_counter()
    got_token = False
    try:
        async for item in gateway.chat_stream(tenant=TENANT, target=target, request=REQUEST,
                                              usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex)):
            if isinstance(item, str):
                got_token = True
            elif isinstance(item, ChatResult):
                return {"ok": True, "latency": time.perf_counter() - t0, "got_token": True, "error": ""}
    except StreamInterrupted as exc:
        return {"ok": False, "latency": time.perf_counter() - t0, "got_token": True, "error": exc.message}
    except LLMError as exc:
        return {"ok": False, "latency": time.perf_counter() - t0, "got_token": got_token, "error": exc.message}
    return {"ok": False, "latency": time.perf_counter() - t0, "got_token": got_token, "error": "no result"}


async def burst(target: str, n: int, *, concurrency: int | None = None) -> tuple[list[dict], float]:
    gate = asyncio.Semaphore(concurrency or n)
    start = time.perf_counter()

    async def run():
        async with gate:
            return await one_call(target, started_at=start if concurrency is None else None)

    results = await asyncio.gather(*(run() for _ in range(n)))
    return list(results), time.perf_counter() - start


def servers(n: int, **config) -> list[FakeOllamaProcess]:
    return [FakeOllamaProcess(**config) for _ in range(n)]


async def bench_throughput(rows: list) -> float:
    config = {"token_rate": 100.0, "reply_tokens": 20, "slots": 1}  # 0.2 s per answer
    rates = {}
    for count in (1, 3):
        fakes = servers(count, **config)
        try:
            registry.register_pool(pool_spec(f"tp{count}", fakes, queue_timeout_s=60))
            await burst(f"tp{count}/fake", 3)  # warm connections
            results, elapsed = await burst(f"tp{count}/fake", BURST)
            ok = sum(r["ok"] for r in results)
            rates[count] = ok / elapsed
            rows.append((f"throughput, {count} server(s)", f"{ok}/{BURST} ok in {elapsed:.2f} s = {rates[count]:.1f} req/s",
                         f"p50 {pct([r['latency'] for r in results], 50) * 1000:.0f} ms"))
        finally:
            for fake in fakes:
                fake.close()
    return rates[3] / rates[1]


async def bench_balancing(rows: list) -> float:
    p95 = {}
    for strategy in ("round_robin", "least_busy"):
        fakes = [FakeOllamaProcess(token_rate=150.0, reply_tokens=10, slots=1),
                 FakeOllamaProcess(token_rate=150.0, reply_tokens=10, slots=1),
                 FakeOllamaProcess(token_rate=50.0, reply_tokens=10, slots=1)]  # 3x slower
        try:
            name = f"bal-{strategy.replace('_', '')}"
            registry.register_pool(pool_spec(name, fakes, strategy=strategy, queue_timeout_s=60))
            await burst(f"{name}/fake", 3)
            results, elapsed = await burst(f"{name}/fake", BURST)
            latencies = [r["latency"] for r in results if r["ok"]]
            p95[strategy] = pct(latencies, 95)
            share = fakes[2].stats()["completed"]
            rows.append((f"heterogeneous pool, {strategy}",
                         f"p50 {pct(latencies, 50) * 1000:.0f} ms, p95 {p95[strategy] * 1000:.0f} ms",
                         f"{len(latencies)}/{BURST} ok, slow server served {share} incl. warm-up"))
        finally:
            for fake in fakes:
                fake.close()
    return p95["least_busy"] / p95["round_robin"]


async def bench_failover(rows: list) -> tuple[int, float]:
    fakes = servers(3, token_rate=100.0, reply_tokens=10, slots=2)
    dispatches: list[tuple[float, str]] = []
    real_acquire = state.acquire

    async def traced_acquire(**kwargs):
        lease = await real_acquire(**kwargs)
        dispatches.append((time.perf_counter(), lease.sid))
        return lease

    try:
        spec = pool_spec("failover", fakes, queue_timeout_s=60)
        registry.register_pool(spec)
        dead_sid = spec.servers[1].sid
        await burst("failover/fake", 3)
        killed_at = {}

        async def killer():
            await asyncio.sleep(KILL_AFTER_S)
            killed_at["t"] = time.perf_counter()
            fakes[1].kill()
            # Out of rotation = the gateway has put it in cooldown (no new requests are routed to it).
            redis = state.async_redis()
            while not await redis.exists(state.key("cd", dead_sid)):
                await asyncio.sleep(0.005)
            killed_at["out"] = time.perf_counter() - killed_at["t"]

        with mock.patch.object(state, "acquire", traced_acquire):
            kill_task = asyncio.create_task(killer())
            results, elapsed = await burst("failover/fake", FAILOVER_REQUESTS, concurrency=24)
            await kill_task
        failed_before_token = sum(1 for r in results if not r["ok"] and not r["got_token"])
        interrupted = sum(1 for r in results if not r["ok"] and r["got_token"])
        late = [t - killed_at["t"] for t, sid in dispatches if sid == dead_sid and t >= killed_at["t"]]
        out_after = killed_at["out"]
        rows.append((f"failover: {FAILOVER_REQUESTS} requests, 1 of 3 killed",
                     f"{sum(r['ok'] for r in results)} ok, {failed_before_token} failed before a token, "
                     f"{interrupted} cut mid-stream", f"{elapsed:.1f} s"))
        reprobes = [t for t in late if t > out_after + 0.001]
        rows.append(("failover: dead server out of rotation after", f"{out_after * 1000:.0f} ms",
                     f"{len(late) - len(reprobes)} attempt(s) hit it before; re-tried by "
                     f"{len(reprobes)} request(s) when its cooldown ran out, each moved on at once"))
        return failed_before_token, out_after
    finally:
        for fake in fakes:
            fake.close()


async def bench_overhead(rows: list) -> float:
    fake = FakeOllamaProcess(token_rate=2000.0, reply_tokens=5, slots=4)
    try:
        registry.register_pool(pool_spec("overhead", [fake]))
        client = httpx.AsyncClient(timeout=10)
        body = {"model": "fake", "messages": REQUEST.messages, "stream": True}

        async def direct():
            t0 = time.perf_counter()
            async with client.stream("POST", fake.url + "/api/chat", json=body) as response:
                async for line in response.aiter_lines():  # to the end: keeps the connection reusable
                    json.loads(line)
            return time.perf_counter() - t0

        async def through():
            result = await one_call("overhead/fake")
            assert result["ok"], result
            return result["latency"]

        for _ in range(OVERHEAD_WARMUP):  # warm up both paths
            await direct()
            await through()
        d, g = [], []
        for _ in range(OVERHEAD_CALLS):
            d.append(await direct())
            g.append(await through())
        await client.aclose()
        # Calls alternate, so each gateway call is compared with the direct call just before it (the machine's
        # load drifts; neighbours see the same load). p50 of those differences = the p50 added latency.
        added = [(gi - di) * 1000 for gi, di in zip(g, d, strict=True)]
        overhead = statistics.median(added)
        rows.append(("overhead: direct call", f"p50 {statistics.median(d) * 1000:.2f} ms",
                     f"p95 {pct(d, 95) * 1000:.2f} ms"))
        rows.append(("overhead: through the gateway", f"p50 {statistics.median(g) * 1000:.2f} ms",
                     f"p95 {pct(g, 95) * 1000:.2f} ms"))
        rows.append(("overhead: added per call", f"p50 {overhead:.2f} ms",
                     f"p95 {pct(added, 95):.2f} ms; difference of the medians "
                     f"{(statistics.median(g) - statistics.median(d)) * 1000:.2f} ms"))
        return overhead
    finally:
        fake.close()


async def main() -> dict:
    rows: list[tuple[str, str, str]] = []
    throughput = await bench_throughput(rows)
    balance = await bench_balancing(rows)
    failed, out_after = await bench_failover(rows)
    overhead = await bench_overhead(rows)
    await gateway.aclose_clients()
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(width)}  result  (detail)")
    for name, result, detail in rows:
        print(f"{name.ljust(width)}  {result}  ({detail})")
    print()
    print(f"throughput ratio 3 vs 1 servers: {throughput:.2f}  (target >= 2.8)")
    print(f"p95 ratio least busy / round robin: {balance:.2f}  (target <= 0.7)")
    print(f"failover: {failed} failed before a token (target 0); dead server out after {out_after:.2f} s "
          "(target <= 2 s)")
    print(f"gateway overhead p50: {overhead:.2f} ms  (target <= 5 ms; LiteLLM publishes 12 ms)")
    return {
        "throughput_ratio_3v1": round(throughput, 3),
        "p95_ratio_leastbusy_vs_roundrobin": round(balance, 3),
        "failover_failed_requests": failed,
        "failover_out_of_rotation_s": round(out_after, 3),
        "overhead_p50_ms": round(overhead, 3),
    }


if __name__ == "__main__":
    settings.LLM_REDIS_PREFIX = f"llmbench:{os.getpid()}:"
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("llm").setLevel(logging.ERROR)
    patches = [mock.patch("billing.services.quota_reserve", return_value=None),
               mock.patch("billing.services.usage_record", return_value=None),
               mock.patch("billing.services.quota_release", return_value=None)]
    for p in patches:
        p.start()
    try:
        figures = asyncio.run(main())
    finally:
        for p in patches:
            p.stop()
        state.reset_all()
    print(json.dumps(figures))
