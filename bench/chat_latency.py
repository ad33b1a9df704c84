"""Chat latency benchmark: what ragdesk adds to time-to-first-token and total time of a streamed answer.

    scripts/env-run python bench/chat_latency.py          # uses (and creates) the database ragdesk_bench_chat
    scripts/env-run python bench/chat_latency.py --smoke  # a few answers, database ragdesk_bench_chat_smoke
    CHAT_BENCH_RUNS=50 CHAT_BENCH_TOKEN_RATE=50 scripts/env-run python bench/chat_latency.py

One run, same fake model server for both paths (a fake Ollama with ONE slot at a fixed token rate, in its own
process):
  direct   POST /api/chat to the fake server (httpx, streaming): the floor any client pays;
  ragdesk  POST /api/v1/assistants/{id}/chat with stream=true on uvicorn -> Celery chat worker (own process)
           -> LLM gateway -> fake server, tokens back through a Redis stream -> SSE to this client.
Requests alternate direct / ragdesk, one at a time. Retrieval (hybrid search over a small knowledge base) is
timed by the worker and subtracted, as the brief asks: the figure is the plumbing's cost, not search's.
Per answer: added TTFT = (ragdesk TTFT - retrieval) - direct TTFT; added total likewise. Also checks streaming
adds no buffering: the ragdesk tokens' inter-arrival gaps are compared with the direct ones.

Then the browser's view of progress: a signed-in session posts the question the way the chat page does
(POST /chat/ask) and opens the answer's event stream (GET /chat/messages/{id}/stream?render=1, as the page's
EventSource does); first_step = from sending the question to the first `step` event ("searching") arriving
(target: 200 ms). The page also renders "Searching…" in the answer bubble straight from the POST's reply.

Last line: JSON with added_ttft_p50_ms, added_ttft_p95_ms, added_total_p50_ms (targets: p50 <= 50, p95 <= 150),
first_step_ms_p50 / first_step_ms_p95 (target 200).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import django
import httpx
from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import free_port, pct, smoke_requested

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.ollama_fake import FakeOllamaProcess  # noqa: E402

# Modules of the app are imported inside functions: they need django.setup(), which main() runs only after
# use_bench_database() has pointed the settings at the bench database.

SMOKE = smoke_requested(__doc__)
DB_NAME = os.environ.get("CHAT_BENCH_DB", "ragdesk_bench_chat")
RUNS = 3 if SMOKE else int(os.environ.get("CHAT_BENCH_RUNS", "40"))
STEP_RUNS = 2 if SMOKE else int(os.environ.get("CHAT_BENCH_STEP_RUNS", "20"))
WARMUP = 1 if SMOKE else int(os.environ.get("CHAT_BENCH_WARMUP", "3"))
TOKEN_RATE = float(os.environ.get("CHAT_BENCH_TOKEN_RATE", "100"))
REPLY_TOKENS = int(os.environ.get("CHAT_BENCH_REPLY_TOKENS", "20"))
QUESTION = "How long do customers have to ask for a refund?"
DOCUMENT = (
    "Refund policy. Customers may ask for a refund within 30 days of purchase. Refunds go back to the original "
    "payment method within five business days. Gift cards are not refundable. Shipping costs are refunded only "
    "when the item arrived damaged."
)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def setup_data(target: str) -> tuple[str, int, str, str]:
    """A fresh team with an API key, a knowledge base holding one indexed document, and an assistant; also the
    owner's e-mail and password (for the browser path)."""
    from accounts.models import Tenant, User
    from accounts.services import api_key_create, tenant_create
    from accounts.tenancy import tenant_scope
    from chat.services import assistant_create
    from knowledge import services as knowledge
    from knowledge.models import Document

    tag = uuid.uuid4().hex[:8]
    password = uuid.uuid4().hex
    owner = User.objects.create_user(email=f"bench-{tag}@example.com", password=password)
    tenant = tenant_create(name=f"Chat bench {tag}", owner=owner)
    tenant = Tenant.objects.get(pk=tenant.pk)
    _key, raw = api_key_create(tenant=tenant, name="bench", scopes=["chat", "read"])
    with tenant_scope(tenant):
        kb = knowledge.kb_create(tenant=tenant, name="Policies", created_by=owner)
        document, _created = knowledge.document_create_from_text(tenant=tenant, kb=kb, title="Refund policy",
                                                                 text=DOCUMENT, enqueue=False)
        knowledge.document_process(tenant=tenant, document_id=document.pk)
        status = Document.objects.get(pk=document.pk).status
        if status != "ready":
            raise RuntimeError(f"bench document not indexed: {status}")
        assistant = assistant_create(tenant=tenant, name="Bench", answer_target=target, cheap_target=target,
                                     knowledge_bases=[kb.pk], max_tokens=REPLY_TOKENS)
    return raw, assistant.pk, owner.email, password


def browser_session(base: str, email: str, password: str):
    """An httpx client signed in through the login form, as a browser is (session and CSRF cookies)."""
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    client.get("/accounts/login/")
    token = client.cookies.get("csrftoken")
    response = client.post("/accounts/login/", data={"username": email, "password": password,
                                                     "csrfmiddlewaretoken": token},
                           headers={"Referer": f"{base}/accounts/login/"})
    if response.status_code != 302:
        raise RuntimeError(f"login failed: {response.status_code}")
    return client


def first_step_once(session, assistant_id: int) -> dict:
    """Post a question as the chat page does, open the answer's stream; ms until the first step arrives."""
    start = time.perf_counter()
    posted = session.post("/chat/ask", data={"assistant_id": assistant_id, "message": QUESTION},
                          headers={"HX-Request": "true", "X-CSRFToken": session.cookies.get("csrftoken"),
                                   "Referer": str(session.base_url)})
    posted_ms = (time.perf_counter() - start) * 1000
    match = re.search(r'data-answer-id="(\d+)"', posted.text)
    if posted.status_code != 200 or not match:
        raise RuntimeError(f"ask failed: {posted.status_code} {posted.text[:300]!r}")
    first_step = None
    event = None
    with session.stream("GET", f"/chat/messages/{match.group(1)}/stream?render=1") as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "step" and first_step is None:
                first_step = (time.perf_counter() - start) * 1000
            elif line.startswith("data: ") and event in ("done", "error"):
                break  # let the answer finish, so the next run does not queue behind it
    return {"posted": posted_ms, "first_step": first_step}


def direct_once(direct, fake_url: str) -> dict:
    """Stream a chat straight from the fake server (a kept-alive client, like the gateway's): the baseline."""
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": QUESTION}],
            "options": {"num_predict": REPLY_TOKENS}}
    arrivals = []
    start = time.perf_counter()
    with direct.stream("POST", f"{fake_url}/api/chat", json=body) as response:
        for line in response.iter_lines():
            if not line:
                continue
            chunk = json.loads(line)
            if chunk.get("message", {}).get("content"):
                arrivals.append(time.perf_counter() - start)
            if chunk.get("done"):
                break
    total = time.perf_counter() - start
    return {"ttft": arrivals[0] * 1000, "total": total * 1000, "gaps": gaps(arrivals), "tokens": len(arrivals)}


def gaps(arrivals: list[float]) -> list[float]:
    return [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)]


def ragdesk_once(http, assistant_id: int) -> dict:
    """Stream an answer through ragdesk; read the retrieval time the worker measured."""
    arrivals = []
    message_id = None
    wall_start = time.time()
    start = time.perf_counter()
    with http.stream("POST", f"/api/v1/assistants/{assistant_id}/chat",
                     json={"message": QUESTION, "stream": True}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"chat failed: {response.status_code} {response.read()[:300]!r}")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                data = json.loads(line[6:])
                if event == "meta":
                    message_id = data["message_id"]
                elif event == "token":
                    arrivals.append(time.perf_counter() - start)
                elif event in ("done", "error"):
                    if event == "error":
                        raise RuntimeError(f"answer failed: {data}")
                    break
    total = time.perf_counter() - start
    detail = http.get(f"/api/v1/messages/{message_id}").json()
    return {"ttft": arrivals[0] * 1000, "total": total * 1000, "gaps": gaps(arrivals), "tokens": len(arrivals),
            "message_id": message_id, "status": detail["status"], "wall_start": wall_start,
            "wall_first_token": wall_start + arrivals[0]}


def stage_timings(message_ids: list[int]) -> dict[int, dict]:
    """The worker's own timings per answer, plus when the web tier created it and the worker claimed it."""
    from accounts.tenancy import system_scope
    from chat.models import Message

    with system_scope():
        rows = Message.all_tenants.filter(pk__in=message_ids).values_list("pk", "timings", "created_at", "started_at")
        return {pk: {**timings, "created": created.timestamp(), "claimed": started.timestamp()}
                for pk, timings, created, started in rows}


def main() -> None:
    use_bench_database(DB_NAME, smoke=SMOKE)
    env = dict(os.environ)
    with FakeOllamaProcess(token_rate=TOKEN_RATE, slots=1, reply_tokens=REPLY_TOKENS,
                           models=["fake:latest"]) as fake:
        env.update({"OLLAMA_HOSTS": fake.url, "OLLAMA_MODEL": "fake", "LLM_ANSWER_TARGET": "ollama/fake",
                    "LLM_CHEAP_TARGET": "ollama/fake"})
        os.environ.update(env)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                       check=True)
        django.setup()
        print("setting up data (indexing one document)...", file=sys.stderr, flush=True)
        raw_key, assistant_id, email, password = setup_data("ollama/fake")

        port = free_port()
        procs = [
            subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "chat", "-P", "solo",
                              "-c", "1", "-l", "warning", "--without-gossip", "--without-mingle",
                              "--without-heartbeat", "-n", f"chatbench-{port}@%h"], cwd=ROOT, env=env),
            # The web process with a connection pool, as it should run under uvicorn (DB_POOL_MAX).
            subprocess.Popen([sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                              "--port", str(port), "--lifespan", "off", "--log-level", "warning",
                              "--no-access-log"], cwd=ROOT, env={**env, "DB_POOL_MAX": env.get("DB_POOL_MAX", "20")}),
        ]
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz")
            headers = {"Authorization": f"Bearer {raw_key}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as http, httpx.Client(timeout=60) as direct:
                for _ in range(WARMUP):
                    direct_once(direct, fake.url)
                    ragdesk_once(http, assistant_id)
                pairs = []
                for _ in range(RUNS):
                    pairs.append((direct_once(direct, fake.url), ragdesk_once(http, assistant_id)))
            session = browser_session(base, email, password)
            try:
                first_step_once(session, assistant_id)  # warm-up
                steps = [first_step_once(session, assistant_id) for _ in range(STEP_RUNS)]
            finally:
                session.close()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()

    timings = stage_timings([r["message_id"] for _d, r in pairs])
    rows = []
    for direct, rag in pairs:
        t = timings.get(rag["message_id"]) or {}
        excluded = (t.get("retrieval_ms") or 0) + (t.get("condense_ms") or 0)
        where = {}
        if t.get("first_token_at"):
            where = {
                "web_in": (t["created"] - rag["wall_start"]) * 1000,
                "to_worker": (t["claimed"] - t["created"]) * 1000,
                "prepare": (t["generation_started_at"] - t["claimed"]) * 1000 - excluded,
                "model_first": (t["first_token_at"] - t["generation_started_at"]) * 1000,
                "relay": (rag["wall_first_token"] - t["first_token_at"]) * 1000,
            }
        rows.append({
            **where,
            "direct_ttft": direct["ttft"], "rag_ttft": rag["ttft"], "excluded": excluded,
            "added_ttft": rag["ttft"] - excluded - direct["ttft"],
            "added_total": rag["total"] - excluded - direct["total"],
            "direct_total": direct["total"], "rag_total": rag["total"],
            "direct_gap": statistics.median(direct["gaps"]) if direct["gaps"] else 0,
            "rag_gap": statistics.median(rag["gaps"]) if rag["gaps"] else 0,
            "tokens": (direct["tokens"], rag["tokens"]),
        })
    col = lambda name: [r[name] for r in rows if name in r]  # noqa: E731
    print(f"\nChat latency: {RUNS} answers each way, fake Ollama 1 slot at {TOKEN_RATE:g} tokens/s, "
          f"{REPLY_TOKENS} tokens per answer\n")
    print(f"{'':34}{'p50 ms':>10}{'p95 ms':>10}")
    for label, name in [("direct: time to first token", "direct_ttft"),
                        ("ragdesk: time to first token", "rag_ttft"),
                        ("  of which retrieval (excluded)", "excluded"),
                        ("added time to first token", "added_ttft"),
                        ("  web: auth, save question", "web_in"),
                        ("  commit, Celery, worker claim", "to_worker"),
                        ("  worker: history, prompt, saves", "prepare"),
                        ("  gateway -> model first token", "model_first"),
                        ("  Redis stream -> SSE -> client", "relay"),
                        ("direct: total", "direct_total"), ("ragdesk: total", "rag_total"),
                        ("added total time", "added_total"),
                        ("direct: gap between tokens", "direct_gap"), ("ragdesk: gap between tokens", "rag_gap")]:
        print(f"{label:34}{pct(col(name), 50):10.1f}{pct(col(name), 95):10.1f}")
    token_counts = {t for r in rows for t in r["tokens"]}
    print(f"\ntokens per answer seen by the client: {sorted(token_counts)} (each token is its own SSE event)")
    print("targets: added TTFT p50 <= 50 ms, p95 <= 150 ms")
    first_steps = [r["first_step"] for r in steps if r["first_step"] is not None]
    print(f"\nProgress in the browser ({len(steps)} questions through POST /chat/ask + the answer's SSE stream):")
    print(f"{'':34}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'  POST /chat/ask (bubble shown)':34}{pct([r['posted'] for r in steps], 50):10.1f}"
          f"{pct([r['posted'] for r in steps], 95):10.1f}")
    print(f"{'first step event after sending':34}{pct(first_steps, 50):10.1f}{pct(first_steps, 95):10.1f}")
    print(f"target: first step <= 200 ms ({len(steps) - len(first_steps)} streams without a step)")
    print(json.dumps({
        "added_ttft_p50_ms": round(pct(col("added_ttft"), 50), 1),
        "added_ttft_p95_ms": round(pct(col("added_ttft"), 95), 1),
        "added_total_p50_ms": round(pct(col("added_total"), 50), 1),
        "first_step_ms_p50": round(pct(first_steps, 50), 1),
        "first_step_ms_p95": round(pct(first_steps, 95), 1),
    }))


if __name__ == "__main__":
    main()
