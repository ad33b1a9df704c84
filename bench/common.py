"""Small helpers the benchmarks share (bench/ is on sys.path when a benchmark runs as a script)."""

import argparse
import atexit
import json
import shutil
import socket
import tempfile
from pathlib import Path

SMOKE_HELP = ("seconds-long run on tiny data, same code path, same table and JSON keys, in databases of its own "
              "(tests/test_benchmarks_smoke.py runs every benchmark this way)")


def pct(values, p):
    """The p-th percentile of values, linearly interpolated (0.0 for no values)."""
    values = sorted(values)
    if not values:
        return 0.0
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_requested(doc: str) -> bool:
    """Parse the command line of a benchmark whose only option is --smoke."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    return parser.parse_args().smoke


def eval_subset(eval_dir: Path, dataset: str, *, queries: int, distractors: int) -> Path | None:
    """A copy of a few queries of one ../shared/eval set, with their relevant passages, `distractors` other
    passages and their gold answers, in a temporary folder of the same layout (None when the set is absent).
    Smoke runs measure it with the benchmark's own code; nothing of it goes into the repository."""
    source = eval_dir / dataset
    if not (source / "corpus.jsonl").exists():
        return None
    read = lambda name: [json.loads(line) for line in (source / name).open(encoding="utf-8") if line.strip()]  # noqa: E731
    qrels: dict[str, list[str]] = {}
    for line in (source / "qrels.tsv").open(encoding="utf-8"):
        row = line.rstrip("\n").split("\t")
        if len(row) >= 3 and row[0] != "query-id" and float(row[2]) > 0:
            qrels.setdefault(row[0], []).append(row[1])
    answers = {str(a["query_id"]): a for a in read("answers.jsonl")} if (source / "answers.jsonl").exists() else None
    picked = [q for q in read("queries.jsonl")
              if str(q["id"]) in qrels and (answers is None or str(q["id"]) in answers)][:queries]
    relevant = {cid for q in picked for cid in qrels[str(q["id"])]}
    corpus = read("corpus.jsonl")
    others = [p for p in corpus if str(p["id"]) not in relevant][:distractors]
    root = Path(tempfile.mkdtemp(prefix="ragdesk-smoke-eval-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    target = root / dataset
    target.mkdir()

    def write(name, rows):
        (target / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    write("corpus.jsonl", [p for p in corpus if str(p["id"]) in relevant] + others)
    write("queries.jsonl", picked)
    (target / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q['id']}\t{cid}\t1\n" for q in picked for cid in qrels[str(q["id"])]), encoding="utf-8")
    if answers is not None:
        write("answers.jsonl", [answers[str(q["id"])] for q in picked])
    return root


def load_passages(eval_dir: Path, dataset: str, limit: int) -> list[dict]:
    """The first `limit` passages (0: all) of a ../shared/eval corpus; exits saying so when it is absent (the
    benchmarks read ../shared/eval, never a copy in the repository)."""
    path = eval_dir / dataset / "corpus.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} not found (the benchmark reads ../shared/eval, never a copy in the repository)")
    passages = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                passages.append(json.loads(line))
                if limit and len(passages) >= limit:
                    break
    return passages
