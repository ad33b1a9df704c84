"""Retrieval evaluation: a KB's own test questions (the product feature) and BEIR-style benchmark folders
(the evaluate_retrieval command and bench/retrieval_quality.py).

Metrics are computed on documents: a ranking of chunks collapses to the ranking of their documents (a
document ranks where its best chunk ranks).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
import uuid
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import timedelta

import numpy as np
import redis
from django.conf import settings as django_settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.models import Tenant
from accounts.selectors import tenant_object_or_404, tenant_objects
from accounts.tenancy import system_scope, tenant_scope
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.search.beir import Dataset
from knowledge.search.metrics import dedupe, mrr_at_k, ndcg_at_k, recall_at_k
from knowledge.search.models import EvalQuestion, EvalRun
from knowledge.search.selectors import search

log = logging.getLogger(__name__)

MAX_QUESTIONS_PER_RUN = 1000
MAX_UPLOAD_QUESTIONS = 2000
# Worth retrying later: the database or Redis (LLM pool slots, caches) briefly unavailable.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)


# ---------------------------------------------------------------- rankings and metrics

def document_ranking(*, tenant, kb_ids: list[int], query: str, depth: int = 10, options: dict | None = None) -> list[int]:
    """Document ids, best first, at least `depth` distinct when the KBs have them."""
    k = min(100, max(depth * 3, depth))
    result = search(tenant=tenant, kb_ids=kb_ids, query=query, k=k, options=options)
    return dedupe(hit.document_id for hit in result.hits)[:max(depth, 10)]


def score_ranking(ranked: list, relevant: dict, k: int) -> dict[str, float]:
    return {"ndcg": ndcg_at_k(ranked, relevant, 10), "recall": recall_at_k(ranked, relevant, k),
            "rr": mrr_at_k(ranked, relevant, 10)}


# ---------------------------------------------------------------- the product feature: a KB's test questions

class UploadError(ValueError):
    pass


@dataclass
class ParsedQuestion:
    text: str
    refs: list[str]


def parse_questions(data: bytes, filename: str = "") -> list[ParsedQuestion]:
    """JSONL ({"question": str, "expected": [str|int, ...]} per line; "query"/"documents" also accepted) or
    CSV (columns question, expected; several expected documents separated by "|" or ";")."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(_("The file is not UTF-8 text.")) from exc
    rows: list[ParsedQuestion] = []
    is_jsonl = filename.lower().endswith((".jsonl", ".json")) or text.lstrip().startswith("{")
    if is_jsonl:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UploadError(_("Line %(n)s is not valid JSON.") % {"n": lineno}) from exc
            if not isinstance(obj, dict):
                raise UploadError(_("Line %(n)s is not a JSON object.") % {"n": lineno})
            question = str(obj.get("question") or obj.get("query") or obj.get("text") or "").strip()
            refs = obj.get("expected", obj.get("documents", obj.get("expected_documents", [])))
            if isinstance(refs, str | int):
                refs = [refs]
            if not question:
                raise UploadError(_("Line %(n)s has no question.") % {"n": lineno})
            rows.append(ParsedQuestion(question, [str(r).strip() for r in refs or [] if str(r).strip()]))
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        qcol = header.get("question") or header.get("query")
        ecol = header.get("expected") or header.get("documents") or header.get("expected_documents")
        if not qcol:
            raise UploadError(_("The CSV needs a 'question' column (and an 'expected' column)."))
        for lineno, row in enumerate(reader, 2):
            question = (row.get(qcol) or "").strip()
            if not question:
                raise UploadError(_("Row %(n)s has no question.") % {"n": lineno})
            raw = (row.get(ecol) or "") if ecol else ""
            refs = [r.strip() for r in raw.replace(";", "|").split("|") if r.strip()]
            rows.append(ParsedQuestion(question, refs))
    if not rows:
        raise UploadError(_("The file has no questions."))
    if len(rows) > MAX_UPLOAD_QUESTIONS:
        raise UploadError(_("At most %(n)s questions per file.") % {"n": MAX_UPLOAD_QUESTIONS})
    return rows


def resolve_refs(*, tenant, kb: KnowledgeBase, refs: list[str]) -> tuple[list[int], list[str]]:
    """Document ids for references given as document id, file name or title (case-insensitive)."""
    docs = list(Document.objects.filter(tenant=tenant, kb=kb).values_list("pk", "filename", "title"))
    by_id = {str(pk): pk for pk, _f, _t in docs}
    by_name = {}
    for pk, filename, title in docs:
        by_name.setdefault((filename or "").lower(), pk)
        by_name.setdefault((title or "").lower(), pk)
    found, missing = [], []
    for ref in refs:
        pk = by_id.get(ref) or by_name.get(ref.lower())
        if pk is None:
            missing.append(ref)
        elif pk not in found:
            found.append(pk)
    return found, missing


def eval_question_create(*, tenant, kb: KnowledgeBase, text: str, document_ids: list[int] | None = None,
                         refs: list[str] | None = None) -> EvalQuestion:
    text = (text or "").strip()
    if not text:
        raise UploadError(_("Enter a question."))
    with tenant_scope(tenant), transaction.atomic():
        ids = [int(i) for i in document_ids or []]
        valid = set(Document.objects.filter(tenant=tenant, kb=kb, pk__in=ids).values_list("pk", flat=True))
        if set(ids) - valid:
            raise UploadError(_("Expected documents must belong to this knowledge base."))
        missing: list[str] = []
        if refs:
            found, missing = resolve_refs(tenant=tenant, kb=kb, refs=refs)
            valid.update(found)
        question = EvalQuestion.objects.create(tenant=tenant, kb=kb, text=text[:4000], unresolved_refs=missing)
        question.expected_documents.set(sorted(valid))
    return question


def eval_questions_import(*, tenant, kb: KnowledgeBase, data: bytes, filename: str = "") -> dict:
    parsed = parse_questions(data, filename)
    created = unresolved = 0
    with tenant_scope(tenant), transaction.atomic():
        for item in parsed:
            question = eval_question_create(tenant=tenant, kb=kb, text=item.text, refs=item.refs)
            created += 1
            unresolved += bool(question.unresolved_refs)
    return {"created": created, "with_unresolved": unresolved}


def eval_question_delete(*, tenant, question: EvalQuestion) -> None:
    with tenant_scope(tenant):
        question.delete()


# ---------------------------------------------------------------- evaluation runs (a worker runs them)
#
# eval_run_start (web request / API) fixes the settings and the questions, stores a queued run and, once the
# transaction commits, sends knowledge.search.tasks.run_evaluation. eval_run_execute (the worker) claims the
# run with a conditional UPDATE (queued -> running, with a claim token), scores the questions, writes progress
# every few questions and ends the run done or failed. A second delivery of the message finds the run no
# longer queued and does nothing; every write of a run is conditional on its claim token, so a run that was
# taken over (a stalled worker's run, reclaimed after EVAL_STALE_AFTER_SECONDS) stops without writing.

EVAL_MAX_ATTEMPTS = 4  # claims of one run (the task retries transient errors EVAL_MAX_ATTEMPTS - 1 times)
PROGRESS_EVERY = 5  # questions between progress writes
PROGRESS_SECONDS = 2.0  # ... or at most this long between them

MSG_NO_JUDGED = gettext_noop("No test question has an expected document yet.")
MSG_NO_JUDGED_LEFT = gettext_noop("The run's questions were deleted or lost their expected documents.")
MSG_TOO_LONG = gettext_noop("The evaluation took too long and was stopped.")
MSG_QUEUE_DOWN = gettext_noop("The evaluation could not be handed to a worker; start it again.")
MSG_INTERRUPTED = gettext_noop("The worker stopped during the evaluation; start it again.")
MSG_NOT_TAKEN = gettext_noop("No worker took the evaluation in time; start it again.")
MSG_DATABASE = gettext_noop("The database was unavailable during the evaluation; start it again.")


class EvalRunError(ValueError):
    """A run cannot start; `fields` maps a parameter to its message (for the API's 400)."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class EvalRunBusy(EvalRunError):
    """The KB already has a queued or running evaluation."""

    def __init__(self, message: str, run: EvalRun):
        super().__init__(message)
        self.run = run


class _Superseded(Exception):
    """This execution no longer owns the run (deleted, or reclaimed after a stall)."""


def _stale_cutoff(now):
    return now - timedelta(seconds=django_settings.EVAL_STALE_AFTER_SECONDS)


def eval_run_start(*, tenant, kb: KnowledgeBase, user=None, k: int = 10, options: dict | None = None,
                   enqueue: bool = True) -> EvalRun:
    """A queued run of the KB's judged test questions with the KB's settings as they are now (plus `options`),
    handed to a worker after commit. Raises EvalRunError (nothing to evaluate, bad options) or EvalRunBusy."""
    from knowledge.search.config import SettingsError, clean_settings, settings_for

    try:
        k = int(k)
    except (TypeError, ValueError) as exc:
        raise EvalRunError(_("k must be a whole number."), {"k": _("Enter a whole number.")}) from exc
    if not 1 <= k <= 50:
        raise EvalRunError(_("k must be between 1 and 50."), {"k": _("Must be between %(lo)s and %(hi)s.")
                                                                % {"lo": 1, "hi": 50}})
    try:
        overrides = clean_settings(options or {})
    except SettingsError as exc:
        raise EvalRunError(str(exc), {"options": exc.errors}) from exc
    now = timezone.now()
    with tenant_scope(tenant), transaction.atomic():
        # One start at a time per KB: the KB row is the lock.
        kb = KnowledgeBase.objects.select_for_update().get(tenant=tenant, pk=kb.pk)
        runs = EvalRun.objects.filter(tenant=tenant, kb=kb)
        _fail_stale(runs, now)
        active = runs.filter(status__in=EvalRun.ACTIVE).order_by("-created_at", "-id").first()
        if active is not None:
            raise EvalRunBusy(_("An evaluation of this knowledge base is already in progress (run #%(id)s).")
                              % {"id": active.pk}, active)
        question_ids = list(
            EvalQuestion.objects.filter(tenant=tenant, kb=kb, expected_documents__isnull=False).distinct()
            .order_by("created_at", "id").values_list("pk", flat=True)[:MAX_QUESTIONS_PER_RUN]
        )
        if not question_ids:
            raise EvalRunError(_(MSG_NO_JUDGED))
        run = EvalRun.objects.create(
            tenant=tenant, kb=kb, k=k, status=EvalRun.Status.QUEUED, question_count=len(question_ids),
            question_ids=question_ids, settings=settings_for(kb, overrides).as_dict(),
            created_by=user if getattr(user, "pk", None) else None,
        )
        if enqueue:
            run_id, tenant_id = run.pk, tenant.pk
            transaction.on_commit(lambda: _send(run_id=run_id, tenant_id=tenant_id))
    return run


def _fail_stale(runs, now) -> None:
    """Runs that can no longer finish: a worker that stopped sending heartbeats, a message no worker took."""
    cutoff = _stale_cutoff(now)
    runs.filter(status=EvalRun.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=EvalRun.Status.FAILED, error=MSG_INTERRUPTED, claim_token="", finished_at=now)
    runs.filter(status=EvalRun.Status.QUEUED).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    ).update(status=EvalRun.Status.FAILED, error=MSG_NOT_TAKEN, finished_at=now)


def eval_run_is_stale(run: EvalRun, now=None) -> bool:
    """An active run that the next start will fail (see _fail_stale): pages stop waiting for it."""
    cutoff = _stale_cutoff(now or timezone.now())
    if run.status == EvalRun.Status.RUNNING:
        return run.heartbeat_at is not None and run.heartbeat_at < cutoff
    if run.status == EvalRun.Status.QUEUED:
        return (run.heartbeat_at or run.created_at) < cutoff
    return False


def _send(*, run_id: int, tenant_id: int) -> None:
    """After commit. A broker outage must not fail the request nor leave the run queued forever."""
    from knowledge.search.tasks import run_evaluation

    try:
        run_evaluation.delay(run_id=run_id, tenant_id=tenant_id)
    except Exception:
        log.warning("evaluation run %s could not be enqueued", run_id, exc_info=True)
        with system_scope():
            EvalRun.all_tenants.filter(pk=run_id, status=EvalRun.Status.QUEUED).update(
                status=EvalRun.Status.FAILED, error=MSG_QUEUE_DOWN, finished_at=timezone.now())


def eval_run_execute(*, tenant, run_id: int) -> str:
    """Claim the queued run and score its questions. Returns what happened: done, failed, skipped, superseded.
    Transient database/Redis errors put the run back in the queue and are raised again (the task retries);
    after EVAL_MAX_ATTEMPTS claims, or on any other error, the run fails with a readable reason."""
    from celery.exceptions import SoftTimeLimitExceeded

    with tenant_scope(tenant):
        token = _claim(tenant=tenant, run_id=run_id)
        if token is None:
            return "skipped"
        execution = _Execution(tenant, EvalRun.objects.select_related("kb", "created_by").get(pk=run_id), token)
        try:
            return execution.run()
        except _Superseded:
            log.info("evaluation run %s was taken over or deleted while running", run_id)
            return "superseded"
        except SoftTimeLimitExceeded:
            _quietly(execution.fail, MSG_TOO_LONG)
            return "failed"
        except TRANSIENT_ERRORS as exc:
            log.warning("evaluation run %s: transient error, will retry: %r", run_id, exc)
            if isinstance(exc, DatabaseError) and not connection.in_atomic_block:
                connection.close()  # the next query reconnects
            if execution.run_obj.attempts >= EVAL_MAX_ATTEMPTS:
                _quietly(execution.fail, MSG_DATABASE)
                return "failed"
            _quietly(execution.release)
            raise
        except Exception as exc:
            log.exception("evaluation run %s failed", run_id)
            if isinstance(exc, DatabaseError) and not connection.in_atomic_block:
                connection.close()
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            _quietly(execution.fail, _("The evaluation failed: %(error)s") % {"error": detail[:500]})
            return "failed"


def eval_run_create(*, tenant, kb: KnowledgeBase, user=None, k: int = 10, options: dict | None = None) -> EvalRun:
    """The synchronous path (tests, commands): start a run and execute it in this process."""
    run = eval_run_start(tenant=tenant, kb=kb, user=user, k=k, options=options, enqueue=False)
    eval_run_execute(tenant=tenant, run_id=run.pk)
    with tenant_scope(tenant):
        run.refresh_from_db()
    return run


def _claim(*, tenant, run_id: int) -> str | None:
    """Take a queued run (or one whose worker stopped sending heartbeats); the claim token, or None."""
    token = uuid.uuid4().hex
    now = timezone.now()
    waiting = EvalRun.objects.filter(tenant=tenant, pk=run_id).filter(
        Q(status=EvalRun.Status.QUEUED) | Q(status=EvalRun.Status.RUNNING, heartbeat_at__lt=_stale_cutoff(now)))
    claimed = waiting.update(status=EvalRun.Status.RUNNING, claim_token=token, started_at=now, heartbeat_at=now,
                             progress=0, error="", attempts=F("attempts") + 1)
    return token if claimed else None


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # the database is gone too: the run is reclaimed once its heartbeat is stale
        log.exception("could not record the outcome of an evaluation run")


class _Execution:
    def __init__(self, tenant, run: EvalRun, token: str):
        self.tenant = tenant
        self.run_obj = run
        self.token = token
        self.started = time.perf_counter()

    def _owned(self):
        return EvalRun.objects.filter(pk=self.run_obj.pk, claim_token=self.token, status=EvalRun.Status.RUNNING)

    def _set(self, **fields) -> None:
        fields.setdefault("heartbeat_at", timezone.now())
        if not self._owned().update(**fields):
            raise _Superseded

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def run(self) -> str:
        from knowledge.search.config import RetrievalSettings

        run = self.run_obj
        # The settings fixed at start, whatever the KB's settings are now (search takes them as overrides).
        known = {f.name for f in dataclass_fields(RetrievalSettings)}
        options = {key: value for key, value in (run.settings or {}).items() if key in known and key != "k"}
        if run.created_by_id:
            options["usage"] = {"user_id": run.created_by_id}
        questions = {q.pk: q for q in EvalQuestion.objects.filter(tenant=self.tenant, kb_id=run.kb_id,
                                                                  pk__in=run.question_ids)
                     .prefetch_related("expected_documents")}
        per_question = []
        totals = {"ndcg": 0.0, "recall": 0.0, "rr": 0.0}
        last_write = time.monotonic()
        for done, question_id in enumerate(run.question_ids, 1):
            question = questions.get(question_id)
            expected = {d.pk: 1 for d in question.expected_documents.all()} if question else {}
            if expected:  # a question deleted since the start, or left without expected documents, is skipped
                ranked = document_ranking(tenant=self.tenant, kb_ids=[run.kb_id], query=question.text,
                                          depth=max(run.k, 10), options=options)
                scores = score_ranking(ranked, expected, run.k)
                for key in totals:
                    totals[key] += scores[key]
                per_question.append({"question_id": question.pk, "question": question.text[:200],
                                     "found": ranked[:run.k], "expected": sorted(expected),
                                     **{key: round(value, 4) for key, value in scores.items()}})
            if done % PROGRESS_EVERY == 0 or time.monotonic() - last_write >= PROGRESS_SECONDS:
                self._set(progress=done)
                last_write = time.monotonic()
        judged = len(per_question)
        if not judged:
            self.fail(MSG_NO_JUDGED_LEFT)
            return "failed"
        self._set(status=EvalRun.Status.DONE, progress=judged, question_count=judged, per_question=per_question,
                  ndcg_at_10=totals["ndcg"] / judged, recall_at_k=totals["recall"] / judged,
                  mrr=totals["rr"] / judged, claim_token="", finished_at=timezone.now(),
                  duration_ms=self._elapsed_ms())
        return "done"

    def fail(self, message: str) -> None:
        if not self._owned().update(status=EvalRun.Status.FAILED, error=str(message)[:2000], claim_token="",
                                    finished_at=timezone.now(), heartbeat_at=timezone.now(),
                                    duration_ms=self._elapsed_ms()):
            raise _Superseded

    def release(self) -> None:
        """Back to the queue for the task's retry."""
        self._owned().update(status=EvalRun.Status.QUEUED, claim_token="", progress=0, heartbeat_at=timezone.now())


# ---------------------------------------------------------------- evaluation reads

def eval_question_list(*, tenant, kb: KnowledgeBase):
    return tenant_objects(EvalQuestion, tenant=tenant).filter(kb=kb).prefetch_related("expected_documents")


def eval_question_get(*, tenant, question_id) -> EvalQuestion:
    return tenant_object_or_404(EvalQuestion, tenant=tenant, pk=question_id)


def eval_run_list(*, tenant, kb: KnowledgeBase):
    return tenant_objects(EvalRun, tenant=tenant).filter(kb=kb).order_by("-created_at", "-id")


def eval_run_get(*, tenant, run_id) -> EvalRun:
    return tenant_object_or_404(EvalRun, tenant=tenant, pk=run_id)


# ---------------------------------------------------------------- BEIR folders in a scratch tenant

def scratch_tenant(label: str) -> Tenant:
    slug = f"eval-{uuid.uuid4().hex[:12]}"
    return Tenant.objects.create(name=f"Evaluation {label}"[:120], slug=slug)


def detect_corpus_language(dataset: Dataset, sample: int = 200) -> str:
    from knowledge.search.analysis import hangul_ratio

    texts = [p.full_text for p in dataset.corpus[:sample]]
    ratio = float(np.mean([hangul_ratio(t) for t in texts])) if texts else 0.0
    return "ko" if ratio >= 0.2 else "en"


def load_dataset_into_kb(*, tenant: Tenant, dataset: Dataset, embedding_model: str, language: str,
                         vectors: np.ndarray | None = None, retrieval: dict | None = None,
                         progress=None) -> tuple[KnowledgeBase, dict[int, str]]:
    """One Document with one Chunk per passage (title kept as the document title), embedded with
    `embedding_model` (or the given vectors, same order as the corpus), then BM25-indexed.
    Returns the KB and {document id: corpus id}."""
    from knowledge.search.embedding_cache import embed_cached
    from knowledge.search.services import postings_index_documents

    if vectors is None:
        vectors = embed_cached(embedding_model, [p.full_text for p in dataset.corpus], kind="documents")
    dim = int(vectors.shape[1])
    with tenant_scope(tenant):
        kb = KnowledgeBase.objects.create(
            tenant=tenant, name=f"{dataset.name}"[:120], language=language, embedding_model=embedding_model,
            embedding_dim=dim, retrieval=retrieval or {},
        )
        mapping: dict[int, str] = {}
        batch = 500
        for start in range(0, len(dataset.corpus), batch):
            passages = dataset.corpus[start:start + batch]
            with transaction.atomic():
                docs = Document.objects.bulk_create([
                    Document(tenant=tenant, kb=kb, title=(p.title or p.id)[:300], filename=f"{p.id}.txt"[:300],
                             content_type="text/plain", size=len(p.text.encode()),
                             sha256=hashlib.sha256(f"{p.id}\n{p.text}".encode()).hexdigest(),
                             status=Document.Status.READY, chunks_total=1, chunks_embedded=1)
                    for p in passages
                ])
                Chunk.objects.bulk_create([
                    Chunk(tenant=tenant, kb=kb, document=doc, ordinal=0, text=p.text, char_start=0,
                          char_end=len(p.text), embedding=vectors[start + i], embedding_dim=dim)
                    for i, (doc, p) in enumerate(zip(docs, passages, strict=True))
                ])
                for doc, p in zip(docs, passages, strict=True):
                    mapping[doc.pk] = p.id
            postings_index_documents(tenant=tenant, kb=kb, document_ids=[d.pk for d in docs])
            if progress:
                progress(min(start + batch, len(dataset.corpus)), len(dataset.corpus))
    return kb, mapping


def prime_query_vectors(model: str, texts: list[str], vectors: np.ndarray) -> None:
    """Put precomputed (disk-cached) query vectors into the search's per-process query cache."""
    from knowledge.search import dense

    with dense._cache_lock:
        for text, vector in zip(texts, vectors, strict=True):
            dense._QUERY_CACHE[(model, text.strip())] = np.asarray(vector, dtype=np.float32)
        while len(dense._QUERY_CACHE) > max(dense._QUERY_CACHE_SIZE, len(texts)):
            dense._QUERY_CACHE.popitem(last=False)


def evaluate_dataset_modes(*, tenant: Tenant, kb: KnowledgeBase, dataset: Dataset, mapping: dict[int, str],
                           modes: list[str], k: int = 10, options: dict | None = None) -> dict[str, dict]:
    """{mode: {"ndcg@10", "recall@10", "mrr@10", "queries", "ms_per_query"}} over the judged queries."""
    queries = dataset.judged_queries
    out = {}
    for mode in modes:
        started = time.perf_counter()
        totals = {"ndcg": 0.0, "recall": 0.0, "rr": 0.0}
        for qid, text in queries.items():
            ranked_docs = document_ranking(tenant=tenant, kb_ids=[kb.pk], query=text, depth=k,
                                           options={**(options or {}), "mode": mode})
            ranked = [mapping[d] for d in ranked_docs if d in mapping]
            scores = score_ranking(ranked, dataset.qrels[qid], k)
            for key in totals:
                totals[key] += scores[key]
        n = max(1, len(queries))
        out[mode] = {"ndcg@10": totals["ndcg"] / n, f"recall@{k}": totals["recall"] / n, "mrr@10": totals["rr"] / n,
                     "queries": len(queries), "ms_per_query": (time.perf_counter() - started) * 1000 / n}
    return out
