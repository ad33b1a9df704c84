#!/usr/bin/env python
"""The scale-out drill (README "Deployment"), against the stack scripts/stack-test started with podman-compose:

    python scripts/stack_drill.py --project ragdesk-drill --url http://127.0.0.1:PORT --image-mb N --up-to-ready-s S

Two tenants, made with `manage.py tenant_create` in a container, each get an API key, knowledge bases and an
assistant answering with the fake model server (`fake-llm`, tests/support/ollama_fake.py). Everything else goes
over the API through the proxy, which spreads it over the web replicas.

1. Ingest throughput: THROUGHPUT_DOCS larger documents with both ingest workers, then as many with one (the other
   stopped): chunks per second from the first document's start to the last one's end (both workers warm).
2. The drill: DOCUMENTS small documents uploaded over UPLOAD_SPAN_S (half per tenant, both at once) while QUESTIONS
   chat questions run; once 40 % are uploaded, one ingest worker container and one web container are SIGKILLed.
3. Checks, once the stack has settled: every document ready with exactly the chunks its file makes (parsed again
   apart from the pipeline; no duplicate ordinals, no duplicate documents), every answer done or failed with an
   error code and message (none stuck), each answer's ledger rows equal to its usage and the ledger equal to
   what the model server reported, and both tenants served alike (upload-to-ready and answer p50 within
   FAIRNESS_RATIO of each other).

Prints a table, then one JSON line; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TENANTS = ("A", "B")
DOCUMENTS = 200
QUESTIONS = 50
THROUGHPUT_DOCS = 16
WARMUP_DOCS = 8
UPLOAD_SPAN_S = 30  # the drill's uploads are spread over this long, as the questions are
KILL_AFTER = 0.4  # share of the drill's uploads done when the containers die
FAIRNESS_RATIO = 2.0
SETTLE_TIMEOUT_S = 900
UPLOAD_THREADS = 4  # per tenant
CHAT_THREADS = 3  # per tenant
WORDS = [
    "refund", "policy", "invoice", "shipping", "warranty", "customer", "account", "payment", "delivery", "return",
    "order", "support", "contract", "renewal", "discount", "subscription", "service", "level", "response",
    "incident", "backup", "retention", "privacy", "security", "password", "access", "audit", "report", "quarter",
    "budget", "travel", "expense", "approval", "manager", "holiday", "leave", "onboarding", "training", "laptop",
    "network", "printer", "license", "vendor", "purchase", "inventory", "warehouse",
]


def log(message: str) -> None:
    print(f"[drill {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Stack:
    """The containers of one podman-compose project (named project_service_n)."""

    def __init__(self, project: str):
        self.project = project

    def name(self, service: str, number: int = 1) -> str:
        return f"{self.project}_{service}_{number}"

    def podman(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(["podman", *args], input=stdin, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"podman {' '.join(args[:3])}: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def manage(self, *args: str) -> str:
        return self.podman("exec", self.name("worker-maintenance"), "python", "manage.py", *args)

    def check(self, spec: dict) -> dict:
        container = self.name("worker-maintenance")
        self.podman("cp", str(ROOT / "scripts" / "stack_drill_check.py"), f"{container}:/tmp/stack_drill_check.py")
        out = self.podman("exec", "-e", f"DRILL_SPEC={json.dumps(spec)}", container, "python",
                          "/tmp/stack_drill_check.py")
        return json.loads(out.strip().splitlines()[-1])

    def address(self, service: str) -> str:
        networks = json.loads(self.podman("inspect", self.name(service), "--format",
                                          "{{json .NetworkSettings.Networks}}"))
        return next(iter(networks.values()))["IPAddress"]

    def ready_lines(self, service: str, number: int) -> int:
        logs = subprocess.run(["podman", "logs", self.name(service, number)], capture_output=True, text=True)
        return (logs.stdout + logs.stderr).count(" ready.")


def document_text(label: str, kind: str, index: int, paragraphs: int) -> str:
    """A unique, deterministic document: a title and `paragraphs` paragraphs of 60-140 words."""
    rng = random.Random(f"{label}-{kind}-{index}")
    body = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140))).capitalize() + "."
            for _ in range(paragraphs)]
    return f"Policy {label}-{kind}-{index}\n\n" + "\n\n".join(body) + f"\n\nReference {label}-{kind}-{index}.\n"


class Tenant:
    def __init__(self, label: str, url: str, key: str):
        self.label = label
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=180)
        self.kbs: dict[str, int] = {}
        self.assistant = 0
        self.uploads: dict[str, str] = {}  # filename -> sha256 of what was sent
        self.chat_outcomes: dict[str, int] = {}
        self.lock = threading.Lock()

    def post(self, path: str, **kwargs) -> httpx.Response:
        """POST, retried while no web replica could take it (a dead one: connection errors, 502/503/504)."""
        for attempt in range(30):
            try:
                response = self.http.post(path, **kwargs)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code not in (502, 503, 504):
                return response
            time.sleep(min(0.5 * (attempt + 1), 3))
        raise RuntimeError(f"{path}: no web replica answered")

    def setup(self) -> None:
        for name in ("throughput", "drill"):
            response = self.post("/api/v1/knowledge-bases", json={"name": f"{name} {self.label}"})
            response.raise_for_status()
            self.kbs[name] = response.json()["id"]
        response = self.post("/api/v1/assistants", json={
            "name": f"Drill {self.label}", "knowledge_bases": [self.kbs["drill"]], "answer_mode": "generative",
            "answer_target": "ollama/fake", "cheap_target": "ollama/fake", "max_tokens": 64})
        response.raise_for_status()
        self.assistant = response.json()["id"]

    def upload(self, kb: str, filename: str, text: str) -> None:
        data = text.encode()
        response = self.post(f"/api/v1/knowledge-bases/{self.kbs[kb]}/documents",
                             files={"file": (filename, data, "text/plain")})
        if response.status_code not in (200, 201):  # 200: already there (a retry after a lost response)
            raise RuntimeError(f"upload {filename}: {response.status_code} {response.text[:300]}")
        with self.lock:
            self.uploads[filename] = hashlib.sha256(data).hexdigest()

    def ask(self, question: str) -> None:
        try:  # not retried: the question may have reached a replica that then died; its answer is checked below
            status = self.http.post(f"/api/v1/assistants/{self.assistant}/chat", json={"message": question}).status_code
        except httpx.TransportError:
            status = 0
        with self.lock:
            self.chat_outcomes[str(status)] = self.chat_outcomes.get(str(status), 0) + 1

    def unfinished(self, kb: str) -> int:
        response = self.http.get(f"/api/v1/knowledge-bases/{self.kbs[kb]}/documents", params={"limit": 200})
        response.raise_for_status()
        return sum(1 for d in response.json()["results"] if d["status"] not in ("ready", "failed"))


def wait_until_ingested(tenants: list[Tenant], kb: str, timeout: float = SETTLE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not sum(t.unfinished(kb) for t in tenants):
                return
        except httpx.HTTPError:
            pass  # a replica just died: ask again
        if time.monotonic() > deadline:
            raise RuntimeError(f"documents of the {kb} knowledge bases still unfinished after {timeout:.0f} s")
        time.sleep(1)


def ingest(tenants: list[Tenant], kb: str, count: int, paragraphs: int, tag: str) -> None:
    jobs = [(t, f"{tag}-{t.label}-{i:03d}.txt", document_text(t.label, tag, i, paragraphs))
            for i in range(count // len(tenants)) for t in tenants]
    with ThreadPoolExecutor(UPLOAD_THREADS * len(tenants)) as pool:
        list(pool.map(lambda job: job[0].upload(kb, job[1], job[2]), jobs))
    wait_until_ingested(tenants, kb)


def throughput(stack: Stack, spec: dict, tag: str) -> float:
    """Chunks per second of the `tag` documents, first start to last end, from the database's timestamps."""
    report = stack.check(spec)
    documents = [d for t in report["tenants"].values() for d in t["kbs"]["throughput"]["documents"]
                 if d["filename"].startswith(f"{tag}-")]
    if any(d["status"] != "ready" for d in documents):
        raise RuntimeError(f"throughput documents not ready: {[d for d in documents if d['status'] != 'ready']}")
    window = max(d["finished_at"] for d in documents) - min(d["started_at"] for d in documents)
    return round(sum(d["chunks"] for d in documents) / window, 1)


def measure_ingest(stack: Stack, tenants: list[Tenant], spec: dict) -> tuple[float, float]:
    log(f"warm-up: {WARMUP_DOCS} documents, so both ingest workers have loaded their model")
    ingest(tenants, "throughput", WARMUP_DOCS, 1, "warmup")
    log(f"throughput with 2 ingest workers: {THROUGHPUT_DOCS} documents")
    ingest(tenants, "throughput", THROUGHPUT_DOCS, 14, "two")
    two = throughput(stack, spec, "two")
    log("stopping worker-ingest_2 (warm shutdown)")
    stack.podman("stop", "-t", "30", stack.name("worker-ingest", 2))
    log(f"throughput with 1 ingest worker: {THROUGHPUT_DOCS} documents")
    ingest(tenants, "throughput", THROUGHPUT_DOCS, 14, "one")
    one = throughput(stack, spec, "one")
    before = stack.ready_lines("worker-ingest", 2)
    stack.podman("start", stack.name("worker-ingest", 2))
    deadline = time.monotonic() + 300
    while stack.ready_lines("worker-ingest", 2) <= before and time.monotonic() < deadline:
        time.sleep(1)
    return one, two


def drill(stack: Stack, tenants: list[Tenant]) -> dict:
    uploads = [(t, f"drill-{t.label}-{i:03d}.txt", document_text(t.label, "drill", i, 1 + i % 3))
               for i in range(DOCUMENTS // len(tenants)) for t in tenants]
    questions = [(t, f"What does policy {t.label}-drill-{i} say about {WORDS[i % len(WORDS)]}?")
                 for i in range(QUESTIONS // len(tenants)) for t in tenants]
    done = {"uploads": 0}
    killed: dict[str, float] = {}
    started = time.monotonic()

    def upload(numbered) -> None:
        number, (tenant, filename, text) = numbered
        time.sleep(max(0.0, started + number * UPLOAD_SPAN_S / len(uploads) - time.monotonic()))
        tenant.upload("drill", filename, text)
        with tenants[0].lock:
            done["uploads"] += 1
            kill_now = not killed and done["uploads"] >= KILL_AFTER * len(uploads)
            if kill_now:
                killed["at_s"] = round(time.monotonic() - started, 1)
        if kill_now:
            for service in ("worker-ingest", "web"):
                log(f"SIGKILL {stack.name(service, 2)} after {done['uploads']} uploads")
                stack.podman("kill", "--signal", "KILL", stack.name(service, 2))

    def ask(job) -> None:
        tenant, question = job
        tenant.ask(question)
        time.sleep(0.5)

    with ThreadPoolExecutor(UPLOAD_THREADS * len(tenants)) as upload_pool, \
            ThreadPoolExecutor(CHAT_THREADS * len(tenants)) as chat_pool:
        chats = [chat_pool.submit(ask, job) for job in questions]
        list(upload_pool.map(upload, enumerate(uploads)))
        uploaded_s = round(time.monotonic() - started, 1)
        for future in chats:
            future.result()
    log(f"{len(uploads)} documents uploaded in {uploaded_s} s, {len(questions)} questions asked; settling")
    wait_until_ingested(tenants, "drill")
    return {"killed_at_s": killed.get("at_s"), "uploaded_s": uploaded_s}


def settle(stack: Stack, spec: dict) -> dict:
    """The check report once no answer is still queued or running (the job sweep ends a dead worker's)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        report = stack.check(spec)
        if not sum(t["answers"]["stuck"] for t in report["tenants"].values()) or time.monotonic() > deadline:
            return report
        time.sleep(5)


def ratio(a, b) -> float | None:
    return round(max(a, b) / max(min(a, b), 0.5), 2) if a is not None and b is not None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--url", required=True, help="the proxy's address")
    parser.add_argument("--image-mb", type=float, required=True)
    parser.add_argument("--up-to-ready-s", type=float, required=True)
    args = parser.parse_args()
    stack = Stack(args.project)

    tenants = []
    for label in TENANTS:
        made = json.loads(stack.manage("tenant_create", "--name", f"Drill {label}", "--owner-email",
                                       f"drill-{label.lower()}@example.com", "--plan", "unlimited", "--api-key",
                                       "drill", "--scopes", "read,write,chat,admin", "--json").strip().splitlines()[-1])
        tenant = Tenant(label, args.url, made["api_key"])
        tenant.setup()
        tenants.append(tenant)
    spec = {"kbs": {t.label: t.kbs for t in tenants}, "assistants": {t.label: t.assistant for t in tenants}}
    fake = f"http://{stack.address('fake-llm')}:11434"

    one, two = measure_ingest(stack, tenants, spec)
    run = drill(stack, tenants)
    report = settle(stack, spec)
    fake_stats = httpx.get(f"{fake}/_fake/stats", timeout=10).json()

    rows, failures = [], []
    per = {label: report["tenants"][label] for label in TENANTS}
    documents = {label: per[label]["kbs"]["drill"]["documents"] for label in TENANTS}
    answers = {label: per[label]["answers"] for label in TENANTS}
    ready = sum(1 for label in TENANTS for d in documents[label] if d["status"] == "ready" and d["exact"])
    duplicates = sum(d["duplicates"] for label in TENANTS for d in documents[label]) + sum(
        per[label]["kbs"]["drill"]["duplicate_files"] for label in TENANTS)
    stuck = sum(answers[label]["stuck"] for label in TENANTS)
    unclear = sum(answers[label]["unclear_failures"] for label in TENANTS)
    mismatches = [m for label in TENANTS for m in answers[label]["ledger_mismatches"]]
    ledger = report["ledger"]
    model_matches = (ledger["input"], ledger["output"]) == (fake_stats["prompt_tokens"], fake_stats["output_tokens"])
    ready_ratio = ratio(per["A"]["kbs"]["drill"]["ready_p50_s"], per["B"]["kbs"]["drill"]["ready_p50_s"])
    answer_ratio = ratio(answers["A"]["latency_p50_s"], answers["B"]["latency_p50_s"])

    def row(name, *values):
        rows.append((name, *[str(v) for v in values]))

    row("documents uploaded", *[len(documents[label]) for label in TENANTS], sum(len(d) for d in documents.values()))
    row("documents ready, exact chunks", *[sum(1 for d in documents[label] if d["status"] == "ready" and d["exact"])
                                           for label in TENANTS], ready)
    row("chunks (expected)", *[f"{sum(d['chunks'] for d in documents[label])} "
                               f"({sum(d['expected'] for d in documents[label])})" for label in TENANTS], "")
    row("duplicate chunks / documents", *[f"{sum(d['duplicates'] for d in documents[label])} / "
                                          f"{per[label]['kbs']['drill']['duplicate_files']}" for label in TENANTS],
        duplicates)
    row("documents retried after the kill", *[sum(1 for d in documents[label] if d["attempts"] > 1)
                                              for label in TENANTS], "")
    row("upload -> ready p50 / max (s)", *[f"{per[label]['kbs']['drill']['ready_p50_s']} / "
                                           f"{round(per[label]['kbs']['drill']['ready_max_s'] or 0, 1)}"
                                           for label in TENANTS], f"ratio {ready_ratio}")
    row("answers: " + "/".join(("done", "failed", "stuck")),
        *[f"{answers[label]['by_status'].get('done', 0)}/{answers[label]['by_status'].get('failed', 0)}/"
          f"{answers[label]['stuck']}" for label in TENANTS], f"{QUESTIONS} asked")
    row("chat responses by HTTP status", *[json.dumps(t.chat_outcomes, sort_keys=True) for t in tenants], "")
    row("answer p50 (s)", *[answers[label]["latency_p50_s"] for label in TENANTS], f"ratio {answer_ratio}")
    row("ledger = answers' usage", *[f"{len(answers[label]['ledger_mismatches'])} mismatches" for label in TENANTS],
        "ok" if not mismatches else "MISMATCH")
    row("ledger = model server's count (tokens)", f"ledger {ledger['input']}+{ledger['output']}",
        f"server {fake_stats['prompt_tokens']}+{fake_stats['output_tokens']}", "ok" if model_matches else "MISMATCH")
    row("ingest chunks/s", f"1 worker {one}", f"2 workers {two}", f"x{round(two / one, 2) if one else '-'}")
    row("image, up -> /readyz", f"{args.image_mb:.0f} MB", f"{args.up_to_ready_s} s", f"kill at {run['killed_at_s']} s")

    width = max(len(r[0]) for r in rows) + 2
    print(f"\nscale-out drill: 2 web replicas behind the proxy, 2 ingest workers; web_2 and worker-ingest_2 "
          f"SIGKILLed after {int(KILL_AFTER * 100)} % of {DOCUMENTS} uploads, {QUESTIONS} questions meanwhile")
    print(f"{'':{width}}{'tenant A':>24}{'tenant B':>24}{'all':>16}")
    for name, *values in rows:
        print(f"{name:{width}}" + "".join(f"{v:>24}" for v in values[:2]) + f"{values[2]:>16}")
    for label in TENANTS:
        for error in answers[label]["errors"]:
            print(f"  failed answer ({label}): {error}")

    if ready != DOCUMENTS:
        failures.append(f"{DOCUMENTS - ready} documents not ready with their exact chunks")
    if duplicates:
        failures.append(f"{duplicates} duplicate chunks or documents")
    if stuck or unclear:
        failures.append(f"{stuck} answers stuck, {unclear} failed without a clear error")
    if sum(a["count"] for a in answers.values()) < QUESTIONS * 0.9:
        failures.append("fewer answers than questions reached the stack")
    if mismatches or not model_matches:
        failures.append("the ledger differs from the answers' usage or the model server's count")
    if (ready_ratio or 99) > FAIRNESS_RATIO or (answer_ratio or 99) > FAIRNESS_RATIO:
        failures.append(f"one tenant served more than {FAIRNESS_RATIO}x slower than the other")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(json.dumps({"documents_ready": ready, "documents_expected": DOCUMENTS, "duplicate_chunks": duplicates,
                      "answers_stuck": stuck, "ingest_chunks_per_s_1_worker": one,
                      "ingest_chunks_per_s_2_workers": two, "image_mb": args.image_mb,
                      "up_to_ready_s": args.up_to_ready_s}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
