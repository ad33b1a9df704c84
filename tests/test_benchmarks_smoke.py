"""Every benchmark in bench/ still runs: each with --smoke (tiny data, a few requests, the same code path) as a
subprocess, in databases of this test run (dropped afterwards) and this run's Redis database, and its last line
is JSON with the keys its docstring documents. Figures are not checked: a smoke run is too small to mean much.

The benchmarks run a few at a time (most of their time is processes starting), so the whole module takes about
as long as the slowest two. Those reading ../shared/eval are skipped, saying so, when it is absent.
"""

import ast
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = ROOT.parent / "shared" / "eval"
AT_ONCE = 4
SLOWEST_FIRST = ["concurrency", "retrieval_latency", "chat_latency", "ingest", "retrieval_quality", "answer_quality",
                 "vector_upgrade", "pool", "metering"]
TIMEOUT_S = 400

# bench -> (keys of the JSON line, or None for {dataset: {system or mode: keys}}; keys inside; needs eval data)
BENCHES = {
    "answer_quality": (None, {"answer_contains_gold", "citation_precision", "answer_chars_p50", "added_ms_p95",
                              "cited_share"}, True),
    "chat_latency": ({"added_ttft_p50_ms", "added_ttft_p95_ms", "added_total_p50_ms", "first_step_ms_p50",
                      "first_step_ms_p95"}, None, False),
    "concurrency": ({"concurrent_streams", "errors_5xx", "other_tenant_p95_ms"}, None, False),
    "ingest": ({"pipeline_chunks_per_s", "model_chunks_per_s", "ratio", "peak_rss_mb"}, None, True),
    "metering": ({"ledger_write_p50_ms", "ledger_write_p95_ms", "usage_page_p95_ms", "records"}, None, False),
    "pool": ({"throughput_ratio_3v1", "p95_ratio_leastbusy_vs_roundrobin", "failover_failed_requests",
              "failover_out_of_rotation_s", "overhead_p50_ms"}, None, False),
    "retrieval_latency": ({"hybrid_p95_ms", "bm25_p95_ms", "dense_p95_ms", "pgvector_bare_p95_ms", "chunks",
                           "ko_hybrid_p95_ms", "ko_bm25_p95_ms"}, None, False),
    "retrieval_quality": (None, {"ndcg@10", "recall@10"}, True),
    "vector_upgrade": ({"chunks", "ingest_chunks_per_s", "upgrade_chunks_per_s", "upgrade_s_per_chunk", "switch_ms"},
                       None, True),
}


def _admin_url() -> str:
    s = connection.settings_dict
    password = f" password={s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"host={s['HOST'] or '127.0.0.1'} port={s['PORT'] or 5432} user={s['USER']} dbname=postgres{password}"


def _run(bench: str, suffix: str) -> dict:
    env = {**os.environ, "BENCH_SMOKE_SUFFIX": suffix, "REDIS_URL": settings.REDIS_URL,
           "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, f"bench/{bench}.py", "--smoke"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    return {"returncode": proc.returncode, "output": output, "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def smoke_runs(request):
    """bench -> a future of its run; the benchmarks this session selected start right away, AT_ONCE at a time."""
    selected = sorted((item.callspec.params["bench"] for item in request.session.items
                       if item.module.__name__ == __name__ and hasattr(item, "callspec")), key=SLOWEST_FIRST.index)
    suffix = f"_{uuid.uuid4().hex[:8]}"  # this run's databases: <bench database>_smoke_<suffix>
    pool = ThreadPoolExecutor(max_workers=AT_ONCE)
    futures = {bench: pool.submit(_run, bench, suffix) for bench in selected if _eval_missing(bench) is None}
    yield futures
    pool.shutdown(wait=True)
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall():
            if name.endswith(f"_smoke{suffix}"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _eval_missing(bench: str) -> str | None:
    return f"{EVAL_DIR} is absent" if BENCHES[bench][2] and not EVAL_DIR.exists() else None


def _documented(bench: str) -> str:
    return ast.get_docstring(ast.parse((ROOT / "bench" / f"{bench}.py").read_text())) or ""


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_benchmark_smoke_run_ends_with_its_json_line(bench, smoke_runs):
    if reason := _eval_missing(bench):
        pytest.skip(f"{bench} reads ../shared/eval: {reason}")
    run = smoke_runs[bench].result()
    output = run["output"]
    assert run["returncode"] == 0, f"{bench} --smoke failed:\n{output[-4000:]}"
    last = output.strip().splitlines()[-1]
    figures = json.loads(last)
    flat, inner, _needs_eval = BENCHES[bench]
    doc = _documented(bench)
    for key in (flat or set()) | (inner or set()):
        assert key in doc, f"bench/{bench}.py's docstring does not document {key!r}"
    if flat is not None:
        assert flat <= set(figures), f"missing {flat - set(figures)} in {last}"
    else:
        assert figures, f"{bench} measured no dataset: {output[-2000:]}"
        for dataset, systems in figures.items():
            for system, values in systems.items():
                assert set(values) == inner, (dataset, system, values)
    print(f"{bench} --smoke: {run['seconds']:.0f} s")
