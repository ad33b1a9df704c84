"""Ingestion throughput: a ../shared/eval corpus end to end through a real Celery worker, next to the bare
embedding model on the same chunks in the same run.

    scripts/env-run python bench/ingest.py          # uses (and creates) the database ragdesk_bench_ingest
    ... python bench/ingest.py --dataset en_scifact_beir_test --limit 1500
    ... python bench/ingest.py --smoke  # 40 passages in 4 files (seconds), database ragdesk_bench_ingest_smoke

The passages are written as markdown files ("# title" + text, --per-file passages each, like real multi-section
documents) into a temporary folder outside the repository, uploaded through the same service the web and API
use, and processed by one worker process (-c 1) on a private queue. Pipeline time runs from the first upload to
the last document ready, so it includes storing files, queueing, parsing, chunking, embedding, database writes
and retrieval's index hook. The bare model then embeds exactly the texts the worker embedded, in batches of
the same size, with the same one thread. The worker's peak RSS covers its whole process tree.

The benchmark has a database of its own: in the app's, documents queued with no worker (the demo tenant's after
`seed_demo`) would hold the global dispatch window. Tenants of runs over an hour old there are deleted first.

Prints a table, then one JSON line: pipeline_chunks_per_s, model_chunks_per_s, ratio, peak_rss_mb (all null,
after the reason, when ../shared/eval has not the dataset).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import django
import psutil
from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import SMOKE_HELP, load_passages
from django.conf import settings
from django.core.files import File
from django.core.management import call_command
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = ROOT.parent / "shared" / "eval"
sys.path.insert(0, str(ROOT))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="en_squad_v1.1_dev")
    parser.add_argument("--limit", type=int, default=0, help="passages to use (0: the whole corpus)")
    parser.add_argument("--per-file", type=int, default=40, help="passages per uploaded file")
    parser.add_argument("--model", default="use-multilingual")
    parser.add_argument("--batch", type=int, default=32, help="embedding batch size (worker and bare model)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.limit, args.per_file, args.timeout = 40, 10, 120.0
    return args


def write_files(passages: list[dict], per_file: int, folder: Path) -> list[Path]:
    files = []
    for start in range(0, len(passages), per_file):
        group = passages[start:start + per_file]
        body = "\n\n".join(f"# {(p.get('title') or p['id']).strip()}\n\n{p['text'].strip()}" for p in group)
        path = folder / f"part-{start // per_file:04d}.md"
        path.write_text(body + "\n", encoding="utf-8")
        files.append(path)
    return files


class Worker:
    def __init__(self, env: dict, log_path: Path):
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", env["INGEST_QUEUE"], "-c", "1",
             "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning",
             "-n", f"bench-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                total = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
                self.peak_rss = max(self.peak_rss, total)
            except psutil.Error:
                pass
            time.sleep(0.1)

    def stop(self):
        self._stop.set()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def wait_until(predicate, timeout: float, what: str, worker: Worker):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker.proc.poll() is not None:
            sys.exit(f"worker exited while waiting for {what}:\n{worker.log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


def main():
    args = parse_args()
    corpus = EVAL_DIR / args.dataset / "corpus.jsonl"
    if not corpus.exists():
        print(f"{corpus} not found (the benchmark reads ../shared/eval, never a copy in the repository)")
        print(json.dumps(dict.fromkeys(("pipeline_chunks_per_s", "model_chunks_per_s", "ratio", "peak_rss_mb"))))
        return
    queue = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    use_bench_database("ragdesk_bench_ingest", smoke=args.smoke)
    os.environ["INGEST_QUEUE"] = queue
    os.environ["INGEST_EMBED_BATCH"] = str(args.batch)
    django.setup()
    # The app's modules need django.setup(), which runs only once the settings' environment is set (above).
    from accounts.models import Tenant
    from accounts.tenancy import system_scope, tenant_scope
    from knowledge import chunking, parsers, services
    from knowledge.embeddings import get_embedder
    from knowledge.models import Document

    call_command("migrate", verbosity=0)
    # A run cut short left its documents queued for a worker that is gone; one running now is younger than an hour.
    with system_scope():
        Tenant.objects.filter(slug__startswith="bench-ingest-",
                              created_at__lt=timezone.now() - timedelta(hours=1)).delete()
    passages = load_passages(EVAL_DIR, args.dataset, args.limit)
    tmp = Path(tempfile.mkdtemp(prefix="ragdesk-bench-"))
    files = write_files(passages, args.per_file, tmp)
    tenant = Tenant.objects.create(name="bench ingest", slug=f"bench-ingest-{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "INGEST_QUEUE": queue, "INGEST_EMBED_BATCH": str(args.batch),
           "INGEST_DISPATCH_WINDOW": "4", "PYTHONUNBUFFERED": "1"}
    worker = Worker(env, tmp / "worker.log")
    try:
        with tenant_scope(tenant):
            kb = services.kb_create(tenant=tenant, name="bench", embedding_model=args.model, allow_any_model=True)
            # Warm-up (not timed): the worker child loads the model on its first document, and the Korean
            # analyser (Kiwi, ~1 s) on its first Korean text.
            warm, _ = services.document_create_from_text(tenant=tenant, kb=kb, title="warm-up",
                                                         text="warm up text, 준비 운동")
        wait_until(lambda: _status(Document, warm.pk, system_scope) == "ready", 180, "the warm-up document", worker)

        started = time.perf_counter()
        ids = []
        with tenant_scope(tenant):
            for path in files:
                with path.open("rb") as fh:
                    document, _created = services.document_create(tenant=tenant, kb=kb, upload=File(fh, name=path.name))
                ids.append(document.pk)

        def all_done():
            with system_scope():
                return Document.all_tenants.filter(pk__in=ids, status__in=["ready", "failed"]).count() == len(ids)
        wait_until(all_done, args.timeout, "the corpus", worker)
        pipeline_s = time.perf_counter() - started
        with system_scope():
            docs = list(Document.all_tenants.filter(pk__in=ids))
        failed = [d for d in docs if d.status == "failed"]
        chunks = sum(d.chunks_total for d in docs if d.status == "ready")
        peak_rss_mb = worker.peak_rss / 1024 / 1024
    finally:
        worker.stop()

    # The bare model on exactly the texts the worker embedded (same parse + chunk code, same batch size).
    texts = []
    for path in files:
        parsed = parsers.parse(parsers.format_for(path.name), path.read_bytes())
        texts += [d.embed_text for d in chunking.chunk_document(parsed, size=kb.chunk_size, overlap=kb.chunk_overlap)]
    embedder = get_embedder(args.model)
    embedder.embed_documents(texts[:args.batch])  # warm-up, like the worker's
    began = time.perf_counter()
    for start in range(0, len(texts), args.batch):
        embedder.embed_documents(texts[start:start + args.batch])
    model_s = time.perf_counter() - began

    try:
        with tenant_scope(tenant):
            services.kb_delete(tenant=tenant, kb=kb)
        tenant.delete()
    except Exception as exc:  # results stand; say what was left behind
        print(f"cleanup failed ({exc!r}); tenant {tenant.slug} is left in the database", file=sys.stderr)
    for path in tmp.iterdir():
        path.unlink()
    tmp.rmdir()

    pipeline_rate = chunks / pipeline_s
    model_rate = len(texts) / model_s
    ratio = pipeline_rate / model_rate
    rows = [
        ("dataset", f"{args.dataset} ({len(passages)} passages{', subset' if args.limit else ''})"),
        ("files uploaded", f"{len(files)} markdown files, {args.per_file} passages each"),
        ("embedding model", f"{args.model}, batch {args.batch}, 1 worker process (-c 1)"),
        ("chunks", f"{chunks} indexed ({len(failed)} documents failed)"),
        ("pipeline", f"{pipeline_s:8.2f} s  {pipeline_rate:8.1f} chunks/s"),
        ("bare model", f"{model_s:8.2f} s  {model_rate:8.1f} chunks/s  ({len(texts)} chunks)"),
        ("ratio", f"{ratio:.3f}  (target >= 0.9)"),
        ("peak worker RSS", f"{peak_rss_mb:.0f} MB"),
        ("database", settings.DATABASES["default"]["NAME"]),
    ]
    width = max(len(k) for k, _v in rows)
    print("\nIngestion benchmark")
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")
    print(json.dumps({"pipeline_chunks_per_s": round(pipeline_rate, 2), "model_chunks_per_s": round(model_rate, 2),
                      "ratio": round(ratio, 3), "peak_rss_mb": round(peak_rss_mb, 1)}))


def _status(model, pk, system_scope):
    with system_scope():
        return model.all_tenants.filter(pk=pk).values_list("status", flat=True).first()


if __name__ == "__main__":
    main()
