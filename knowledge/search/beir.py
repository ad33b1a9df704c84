"""Reading a BEIR-style evaluation folder: corpus.jsonl, queries.jsonl, qrels.tsv (answers.jsonl optional)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path


class DatasetError(ValueError):
    pass


@dataclass
class Passage:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """What is embedded for the passage: the title gives the text its context."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass
class Dataset:
    name: str
    corpus: list[Passage]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def judged_queries(self) -> dict[str, str]:
        """Queries with at least one relevant passage (the ones metrics are computed on)."""
        return {qid: text for qid, text in self.queries.items() if any(s > 0 for s in self.qrels.get(qid, {}).values())}


def _jsonl(path: Path):
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path.name} line {lineno}: {exc}") from exc


def load_dataset(folder: str | Path, *, split: str = "dev") -> Dataset:
    """Load a BEIR-style folder. `split` "dev" reads queries.jsonl/qrels.tsv; another name reads
    queries-<split>.jsonl / qrels-<split>.tsv (or <split>/queries.jsonl) when present."""
    folder = Path(folder)
    if not (folder / "corpus.jsonl").exists():
        raise DatasetError(f"{folder} has no corpus.jsonl")
    queries_path, qrels_path = folder / "queries.jsonl", folder / "qrels.tsv"
    if split != "dev":
        for q, r in ((folder / f"queries-{split}.jsonl", folder / f"qrels-{split}.tsv"),
                     (folder / split / "queries.jsonl", folder / split / "qrels.tsv")):
            if q.exists() and r.exists():
                queries_path, qrels_path = q, r
                break
        else:
            raise DatasetError(f"{folder} has no queries/qrels for split {split!r}")
    if not queries_path.exists() or not qrels_path.exists():
        raise DatasetError(f"{folder} needs queries.jsonl and qrels.tsv")
    corpus = [Passage(str(r["id"]), str(r.get("title") or ""), str(r.get("text") or "")) for r in _jsonl(folder / "corpus.jsonl")]
    queries = {str(r["id"]): str(r["text"]) for r in _jsonl(queries_path)}
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            try:
                score = int(float(row[2]))
            except ValueError:
                continue
            qrels.setdefault(row[0], {})[row[1]] = score
    return Dataset(folder.name, corpus, queries, qrels)
