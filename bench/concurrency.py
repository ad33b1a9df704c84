"""Concurrency benchmark: many streaming chats at once must not starve anyone (issue 12, section 1).

    scripts/env-run python bench/concurrency.py        # uses (and creates) the database ragdesk_bench_concurrency
    CONCURRENCY_BENCH_LEVELS=25,50 scripts/env-run python bench/concurrency.py
    scripts/env-run python bench/concurrency.py --smoke   # one level of 4 short streams, 2 tenants (seconds)

The stack is the `make run` configuration, started by scripts/run-app itself (migrate, demo seed, uvicorn with
DB_POOL_MAX=20, the Celery workers and beat exactly as configured there) on a free port, against a database and a
redis-server of its own. The only model is a fake Ollama in its own process with unlimited slots and a fixed
token rate, so every answer streams for REPLY_TOKENS / TOKEN_RATE seconds.

Tenants: TENANTS streaming tenants (each an API key, a knowledge base with one indexed document and an
assistant) and one more tenant that only reads. For each level N: N streaming chats (POST
/api/v1/assistants/{id}/chat with stream=true, over the API), spread over the streaming tenants, all started at
once; meanwhile the other tenant, in a process of its own, reads GET /api/v1/me and GET /api/v1/assistants one
after the other. A level is reached when nothing answered 5xx, every stream ended with `done` carrying the model's
whole reply token by token (not an answer that fell back to quoting the documents), and all N streams were
receiving tokens at the same moment (the most [first token, last token] intervals that overlap is N).
The ramp stops at the first level not reached. CPU time and resident memory of the web server and each worker
are printed per level.

CONCURRENCY_BENCH_LEVELS, _TENANTS, _TOKEN_RATE, _REPLY_TOKENS, _DB (database name), _DUMP (a path prefix: raw
figures as JSON) tune it.

Printed: a table per level, then one JSON line: concurrent_streams (the largest N reached), errors_5xx (5xx seen
up to and including that level; all of them if none was reached) and other_tenant_p95_ms (the reads' p95
during that level). Targets: concurrent_streams >= 200, errors_5xx == 0, other_tenant_p95_ms <= 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import django
import httpx
import psutil
import redis
from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import free_port, pct, smoke_requested

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.ollama_fake import FakeOllamaProcess, reply_words  # noqa: E402

# Modules of the app are imported inside functions: they need django.setup(), which main() runs only after
# use_bench_database() has pointed the settings at the bench database.

SMOKE = smoke_requested(__doc__)
DB_NAME = os.environ.get("CONCURRENCY_BENCH_DB", "ragdesk_bench_concurrency")
LEVELS = [4] if SMOKE else [int(n) for n in os.environ.get("CONCURRENCY_BENCH_LEVELS", "25,50,100,200,300").split(",")]
TENANTS = 2 if SMOKE else int(os.environ.get("CONCURRENCY_BENCH_TENANTS", "5"))
TOKEN_RATE = 20.0 if SMOKE else float(os.environ.get("CONCURRENCY_BENCH_TOKEN_RATE", "10"))
REPLY_TOKENS = 10 if SMOKE else int(os.environ.get("CONCURRENCY_BENCH_REPLY_TOKENS", "200"))
WARMUP_STREAMS = 2 if SMOKE else 5
STREAM_TIMEOUT_S = float(os.environ.get("CONCURRENCY_BENCH_STREAM_TIMEOUT_S", "180"))
QUESTION = "How long do customers have to ask for a refund?"
DOCUMENT = (
    "Refund policy. Customers may ask for a refund within 30 days of purchase. Refunds go back to the original "
    "payment method within five business days. Gift cards are not refundable. Shipping costs are refunded only "
    "when the item arrived damaged."
)
READ_PATHS = ("/api/v1/me", "/api/v1/assistants")


@contextlib.contextmanager
def private_redis():
    """A redis-server of the bench's own (as scripts/postgres_redis.py starts one): no other app, test or bench on
    this machine can consume its task messages or see its streams."""
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is needed on PATH")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--maxclients", "10000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("scripts/run-app exited before the web server came up")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


# ------------------------------------------------------------------ data

def setup_tenants(target: str) -> tuple[list[tuple[str, int]], str]:
    """TENANTS streaming tenants (API key, assistant id) and one reading tenant's key."""
    from accounts.models import Tenant, User
    from accounts.services import api_key_create, tenant_create
    from accounts.tenancy import tenant_scope
    from chat.services import assistant_create
    from knowledge import services as knowledge
    from knowledge.models import Document

    tag = uuid.uuid4().hex[:8]

    def tenant(label: str):
        owner = User.objects.create_user(email=f"conc-{label}-{tag}@example.com", password=uuid.uuid4().hex)
        created = tenant_create(name=f"Concurrency {label} {tag}", owner=owner)
        Tenant.objects.filter(pk=created.pk).update(plan="unlimited")  # repeated runs never meet a quota
        return Tenant.objects.get(pk=created.pk), owner

    streaming = []
    for i in range(TENANTS):
        team, owner = tenant(f"s{i}")
        raw = api_key_create(tenant=team, name="bench", scopes=["chat", "read"])[1]
        with tenant_scope(team):
            kb = knowledge.kb_create(tenant=team, name="Policies", created_by=owner)
            document, _created = knowledge.document_create_from_text(tenant=team, kb=kb, title="Refund policy",
                                                                     text=DOCUMENT, enqueue=False)
            knowledge.document_process(tenant=team, document_id=document.pk)
            if Document.objects.get(pk=document.pk).status != "ready":
                raise RuntimeError("bench document not indexed")
            assistant = assistant_create(tenant=team, name="Bench", answer_target=target, cheap_target=target,
                                         knowledge_bases=[kb.pk], max_tokens=REPLY_TOKENS)
        streaming.append((raw, assistant.pk))
    reader, _owner = tenant("reader")
    return streaming, api_key_create(tenant=reader, name="reads", scopes=["read"])[1]


def wait_for_idle_ingestion(timeout: float = 300) -> None:
    """The demo seed queues its sample documents; measure after they are in (ingestion is not under test)."""
    from accounts.tenancy import system_scope
    from knowledge.models import Document

    deadline = time.monotonic() + timeout
    with system_scope():
        while time.monotonic() < deadline:
            if not Document.objects.exclude(status__in=["ready", "failed"]).exists():
                return
            time.sleep(1)
    print("warning: demo ingestion still running", file=sys.stderr)


# ------------------------------------------------------------------ the other tenant's reads (own process)

def read_loop(base: str, key: str, conn, stop) -> None:
    """Plain API reads one after the other until `stop` is set; sends back (start, ms, status) per read."""
    samples = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        i = 0
        while not stop.is_set():
            path = READ_PATHS[i % len(READ_PATHS)]
            i += 1
            started = time.time()
            t0 = time.perf_counter()
            try:
                status = http.get(path).status_code
            except httpx.HTTPError:
                status = 0
            samples.append((started, (time.perf_counter() - t0) * 1000, status))
            time.sleep(0.05)
    conn.send(samples)
    conn.close()


# ------------------------------------------------------------------ streams

@dataclass
class StreamRecord:
    status: int = 0
    first_token: float | None = None
    last_token: float | None = None
    tokens: int = 0
    final: str = ""
    error: str = ""
    error_status: int = 0
    started: float = 0.0
    text: str = ""


async def one_stream(http, key: str, assistant_id: int, record: StreamRecord) -> None:
    record.started = time.time()
    try:
        async with http.stream("POST", f"/api/v1/assistants/{assistant_id}/chat",
                               json={"message": QUESTION, "stream": True},
                               headers={"Authorization": f"Bearer {key}"}) as response:
            record.status = response.status_code
            if response.status_code != 200:
                record.error = (await response.aread())[:200].decode(errors="replace")
                return
            event = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "token":
                        now = time.time()
                        record.first_token = record.first_token or now
                        record.last_token = now
                        record.tokens += 1
                        record.text += json.loads(line[6:]).get("text", "")
                    elif event == "reset":
                        record.text = ""
                    elif event in ("done", "error"):
                        record.final = event
                        if event == "error":
                            data = json.loads(line[6:])
                            record.error = data.get("message", "")[:200]
                            record.error_status = int(data.get("status") or 0)
                        return
    except Exception as exc:  # noqa: BLE001 - a dropped stream is a result to report, not a crash
        record.error = f"{type(exc).__name__}: {exc}"[:200]


def max_overlap(records: list[StreamRecord]) -> int:
    points = []
    for r in records:
        if r.first_token is not None and r.last_token is not None:
            points += [(r.first_token, 1), (r.last_token, -1)]
    points.sort(key=lambda p: (p[0], -p[1]))  # an interval starting when another ends counts as overlapping
    best = current = 0
    for _t, step in points:
        current += step
        best = max(best, current)
    return best


async def run_level(base: str, streaming: list[tuple[str, int]], n: int) -> list[StreamRecord]:
    records = [StreamRecord() for _ in range(n)]
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    timeout = httpx.Timeout(STREAM_TIMEOUT_S, connect=30)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as http:
        await asyncio.gather(*(one_stream(http, *streaming[i % len(streaming)], records[i]) for i in range(n)))
    return records


ROLES = (("web", "uvicorn"), ("chat worker", "-n chat-"), ("ingest worker", "-n background-"),
         ("beat", " beat "), ("model server", "start_local_llm"))


def resources(stack: subprocess.Popen | None) -> dict[str, tuple[float, float]]:
    """(CPU seconds used so far, resident MB now) of each part of the stack (the bench client and the fake model
    are not in it)."""
    used: dict[str, tuple[float, float]] = {}
    if stack is None:
        return used
    for proc in psutil.Process(stack.pid).children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
            times, rss = proc.cpu_times(), proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
        role = next((name for name, mark in ROLES if mark in line), None)
        if role is None and "celery" in line:  # an unnamed worker (prefork children carry their parent's line)
            role = "worker"
        if role:
            cpu, mem = used.get(role, (0.0, 0.0))
            used[role] = (cpu + times.user + times.system, mem + rss)
    return used


def measure(base: str, streaming, reader_key: str, n: int, stack: subprocess.Popen | None = None) -> dict:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    reader = ctx.Process(target=read_loop, args=(base, reader_key, child, stop), daemon=True)
    reader.start()
    time.sleep(1.0)  # a few quiet reads first; only those during the streams count
    before = resources(stack)
    started = time.time()
    records = asyncio.run(run_level(base, streaming, n))
    ended = time.time()
    after = resources(stack)
    stop.set()
    samples = parent.recv()
    reader.join(30)
    during = [s for s in samples if started <= s[0] <= ended]
    if os.environ.get("CONCURRENCY_BENCH_DUMP"):  # raw figures, for looking closer
        with open(f"{os.environ['CONCURRENCY_BENCH_DUMP']}-{n}.json", "w") as fh:
            json.dump({"started": started, "reads": during, "streams": [vars(r) for r in records]}, fh)
    latencies = [ms for _t, ms, _status in during]
    read_5xx = sum(1 for _t, _ms, status in during if status >= 500 or status == 0)
    chat_5xx = sum(1 for r in records if r.status >= 500)
    dropped = sum(1 for r in records if r.status == 200 and r.final not in ("done", "error"))
    stream_errors = sum(1 for r in records if r.final == "error")
    # The model's whole reply, token by token: an answer that fell back to quoting the documents (the model
    # was unreachable) or lost text is not a streamed answer.
    expected = "".join(reply_words(REPLY_TOKENS))
    wrong = sum(1 for r in records if r.final == "done" and r.text != expected)
    firsts = [r.first_token - r.started for r in records if r.first_token]
    overlap = max_overlap(records)
    errors_5xx = chat_5xx + read_5xx
    return {
        "n": n, "chat_5xx": chat_5xx, "read_5xx": read_5xx, "errors_5xx": errors_5xx,
        "other_statuses": sorted({r.status for r in records if r.status not in (200,) and r.status < 500}),
        "stream_errors": stream_errors, "dropped": dropped, "wrong": wrong, "done": sum(1 for r in records if r.final == "done"),
        "overlap": overlap, "reads": len(latencies), "read_p50_ms": pct(latencies, 50),
        "read_p95_ms": pct(latencies, 95), "read_max_ms": max(latencies, default=0.0),
        "ttft_p50_s": pct(firsts, 50), "ttft_p95_s": pct(firsts, 95), "wall_s": ended - started,
        "cpu": {role: round(after[role][0] - before.get(role, (0.0, 0.0))[0], 1) for role in after},
        "rss": {role: round(after[role][1]) for role in after},
        "sample_error": next((f"{r.status} {r.error}" for r in records if r.error), ""),
        "reached": errors_5xx == 0 and dropped == 0 and stream_errors == 0 and wrong == 0 and overlap == n,
    }


# ------------------------------------------------------------------ the stack

def start_stack(env: dict, port: int) -> subprocess.Popen:
    """scripts/run-app in a session of its own, so it and everything it started stop together."""
    log = open(ROOT / "var" / f"bench-concurrency-{port}.log", "w")  # noqa: SIM115 - lives as long as the stack
    # No background vector upgrade: e5 re-embedding the seeded KB would take a core from the answers measured.
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1", "EMBEDDING_UPGRADE_MODEL": "",
           "CELERY_BEAT_SCHEDULE_FILE": str(ROOT / "var" / f"bench-celerybeat-{port}")}
    return subprocess.Popen(["scripts/run-app"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_stack(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # run-app's own cleanup has stopped its children; whatever is left of the group goes now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def worker_layout() -> list[str]:
    """The Celery worker lines of scripts/run-app, for the report."""
    lines = (ROOT / "scripts" / "run-app").read_text().splitlines()
    return [line.split("&")[0].strip() for line in lines if "celery" in line and " worker" in line]


def main() -> None:
    use_bench_database(DB_NAME, smoke=SMOKE)
    slots = max(LEVELS) + 50
    with private_redis() as redis_url, FakeOllamaProcess(token_rate=TOKEN_RATE, slots=slots, reply_tokens=REPLY_TOKENS,
                                                         models=["fake:latest"], default_num_ctx=8192) as fake:
        env = {**os.environ, "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url,
               "OLLAMA_HOSTS": fake.url, "OLLAMA_MODEL": "fake", "OLLAMA_NUM_PARALLEL": str(slots),
               "LLM_ANSWER_TARGET": "ollama/fake", "LLM_CHEAP_TARGET": "ollama/fake",
               "PYTHONUNBUFFERED": "1", "HTTPS_ONLY": "false"}  # plain HTTP on loopback
        os.environ.update(env)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                       check=True)
        django.setup()
        print("setting up tenants (indexing their documents)...", file=sys.stderr, flush=True)
        streaming, reader_key = setup_tenants("ollama/fake")
        port = free_port()
        stack = start_stack(env, port)
        results = []
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", stack)
            if not SMOKE:  # a smoke run only checks the path: the demo's ingestion may go on meanwhile
                wait_for_idle_ingestion()
            print("warming up...", file=sys.stderr, flush=True)
            measure(base, streaming, reader_key, WARMUP_STREAMS)
            for n in LEVELS:
                print(f"level {n}...", file=sys.stderr, flush=True)
                result = measure(base, streaming, reader_key, n, stack)
                results.append(result)
                if not result["reached"]:
                    break
                time.sleep(3)
        finally:
            stop_stack(stack)

    print(f"\nConcurrent streaming chats: one web process (scripts/run-app: uvicorn, DB_POOL_MAX=20), fake model "
          f"at {TOKEN_RATE:g} tokens/s x {REPLY_TOKENS} tokens, {TENANTS} streaming tenants + 1 reading tenant")
    print("workers: " + " | ".join(worker_layout()) + "\n")
    head = (f"{'N':>5}{'done':>6}{'5xx':>6}{'err':>5}{'drop':>6}{'other':>7}{'overlap':>9}{'TTFT p50':>10}{'TTFT p95':>10}"
            f"{'reads':>7}{'read p50':>10}{'read p95':>10}{'read max':>10}  reached")
    print(head)
    for r in results:
        print(f"{r['n']:>5}{r['done']:>6}{r['errors_5xx']:>6}{r['stream_errors']:>5}{r['dropped']:>6}{r['wrong']:>7}"
              f"{r['overlap']:>9}{r['ttft_p50_s']:>9.2f}s{r['ttft_p95_s']:>9.2f}s{r['reads']:>7}"
              f"{r['read_p50_ms']:>8.0f}ms{r['read_p95_ms']:>8.0f}ms{r['read_max_ms']:>8.0f}ms  "
              f"{'yes' if r['reached'] else 'NO'}")
        if not r["reached"] and (r["sample_error"] or r["other_statuses"]):
            print(f"      other statuses: {r['other_statuses']}; e.g. {r['sample_error']}")
    print("\nCPU seconds used during each level, and resident memory at its end:")
    for r in results:
        print(f"  N={r['n']}: " + ", ".join(f"{role} {r['cpu'][role]:g} s / {r['rss'][role]} MB"
                                            for role in sorted(r["cpu"]) if role != "beat"))
    print("\n5xx: chat POSTs and the other tenant's reads answered 5xx (or not at all); err: streams that ended with "
          "an error event; drop: streams cut before done/error; other: ended with done but not with the model's whole "
          "reply (quoted the documents instead, or lost text); overlap: most streams receiving tokens at once.")
    print("targets: concurrent_streams >= 200, errors_5xx == 0, other_tenant_p95_ms <= 200")
    reached = [r for r in results if r["reached"]]
    best = reached[-1] if reached else None
    counted = results[:results.index(best) + 1] if best else results
    print(json.dumps({
        "concurrent_streams": best["n"] if best else 0,
        "errors_5xx": sum(r["errors_5xx"] for r in counted),
        "other_tenant_p95_ms": round(best["read_p95_ms"] if best else (results[0]["read_p95_ms"] if results else 0), 1),
    }))


if __name__ == "__main__":
    main()
