"""An evaluation run as a worker runs it: a job of the one engine (config.jobs).

services.eval_run_start fixes the settings and the questions, stores a queued run and, once the transaction
commits, sends knowledge.search.tasks.run_evaluation. eval_run_execute (the worker) claims the run (queued ->
running, with a claim token), scores the questions while the process's heartbeat thread beats, writes progress
every few questions and ends the run done or failed. A second delivery of the message finds the run no longer
queued and does nothing; every write of a run is conditional on its claim token, so a run that was taken over
(swept or reclaimed after JOBS_STALE_AFTER_SECONDS without a heartbeat) stops without writing.
The job sweep (EVAL_RUN_JOB) fails a run whose worker died, and a queued one no worker took within
EVAL_QUEUE_TIMEOUT_S, without waiting for the next run of the KB to start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.tenancy import tenant_scope
from config import jobs
from knowledge.search.config import RetrievalSettings
from knowledge.search.evaluation import scoring
from knowledge.search.models import EvalQuestion, EvalRun
from knowledge.search.selectors import search_payer

log = logging.getLogger(__name__)

# Worth retrying later: the database or Redis (LLM pool slots, caches) briefly unavailable.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)
EVAL_MAX_ATTEMPTS = 4  # claims of one run (the task retries transient errors EVAL_MAX_ATTEMPTS - 1 times)
PROGRESS_EVERY = 5  # questions between progress writes
PROGRESS_SECONDS = 2.0  # ... or at most this long between them

MSG_NO_JUDGED_LEFT = gettext_noop("The run's questions were deleted or lost their expected documents.")
MSG_TOO_LONG = gettext_noop("The evaluation took too long and was stopped.")
MSG_INTERRUPTED = gettext_noop("The worker stopped during the evaluation; start it again.")
MSG_NOT_TAKEN = gettext_noop("No worker took the evaluation in time; start it again.")
MSG_DATABASE = gettext_noop("The database was unavailable during the evaluation; start it again.")


class _Superseded(Exception):
    """This execution no longer owns the run (deleted, swept, or reclaimed after its worker went silent)."""


def eval_run_execute(*, tenant, run_id: int) -> str:
    """Claim the queued run and score its questions. Returns what happened: done, failed, skipped, superseded.
    Transient database/Redis errors put the run back in the queue and are raised again (the task retries);
    after EVAL_MAX_ATTEMPTS claims, or on any other error, the run fails with a readable reason."""
    with tenant_scope(tenant):
        token = _claim(tenant=tenant, run_id=run_id)
        if token is None:
            return "skipped"
        execution = _Execution(tenant, EvalRun.objects.select_related("kb", "created_by").get(pk=run_id), token)
        try:
            with jobs.heartbeat(execution.job):
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


def _claim(*, tenant, run_id: int) -> str | None:
    """Take a queued run (or one whose worker went silent); the claim token, or None."""
    waiting = EvalRun.objects.filter(tenant=tenant, pk=run_id).filter(
        Q(status=EvalRun.Status.QUEUED) | (Q(status=EvalRun.Status.RUNNING) & jobs.stale()))
    return jobs.claim(waiting, status=EvalRun.Status.RUNNING, started_at=timezone.now(), progress=0, error="",
                      attempts=F("attempts") + 1)


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # the database is gone too: the job sweep fails the run once its heartbeat is stale
        log.exception("could not record the outcome of an evaluation run")


class _Execution:
    def __init__(self, tenant, run: EvalRun, token: str):
        self.tenant = tenant
        self.run_obj = run
        self.job = jobs.Job(EvalRun, run.pk, token, status=EvalRun.Status.RUNNING)
        self.started = time.perf_counter()

    def _set(self, **fields) -> None:
        if not self.job.update(**fields):
            raise _Superseded

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def run(self) -> str:
        run = self.run_obj
        # The settings fixed at start, whatever the KB's settings are now (search takes them as overrides).
        known = {f.name for f in dataclass_fields(RetrievalSettings)}
        options = {key: value for key, value in (run.settings or {}).items() if key in known and key != "k"}
        payer = search_payer(user_id=run.created_by_id)
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
                ranked = scoring.document_ranking(tenant=self.tenant, kb_ids=[run.kb_id], query=question.text,
                                                  depth=max(run.k, 10), options=options,
                                                  usage=payer.for_call(question_id))
                scores = scoring.score_ranking(ranked, expected, run.k)
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
        if not self.job.update(status=EvalRun.Status.FAILED, error=str(message)[:2000], claim_token="",
                               finished_at=timezone.now(), duration_ms=self._elapsed_ms()):
            raise _Superseded

    def release(self) -> None:
        """Back to the queue for the task's retry."""
        self.job.update(status=EvalRun.Status.QUEUED, claim_token="", progress=0)


# ---------------------------------------------------------------- the job sweep

def _fail_dead_runs(dead: QuerySet, now: datetime) -> dict:
    failed = dead.update(status=EvalRun.Status.FAILED, error=MSG_INTERRUPTED, claim_token="", finished_at=now)
    if failed:
        log.warning("evaluation: %s runs whose worker died failed", failed)
    return {"failed": failed}


def _fail_runs_not_taken(runs: QuerySet, now: datetime) -> dict:
    """A queued run no worker took (or took back after a transient error) within EVAL_QUEUE_TIMEOUT_S."""
    cutoff = now - timedelta(seconds=settings.EVAL_QUEUE_TIMEOUT_S)
    not_taken = runs.filter(status=EvalRun.Status.QUEUED).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    ).update(status=EvalRun.Status.FAILED, error=MSG_NOT_TAKEN, finished_at=now)
    if not_taken:
        log.warning("evaluation: %s runs no worker took failed", not_taken)
    return {"not_taken": not_taken}


EVAL_RUN_JOB = jobs.Kind(name="evaluation", model=EvalRun, running=Q(status=EvalRun.Status.RUNNING),
                         on_stale=_fail_dead_runs, on_waiting=_fail_runs_not_taken)


def eval_run_is_stale(run: EvalRun, now: datetime | None = None) -> bool:
    """An active run the job sweep will fail: pages stop waiting for it."""
    if run.status == EvalRun.Status.RUNNING:
        return jobs.is_stale(run.heartbeat_at, now=now)
    if run.status == EvalRun.Status.QUEUED:
        cutoff = (now or timezone.now()) - timedelta(seconds=settings.EVAL_QUEUE_TIMEOUT_S)
        return (run.heartbeat_at or run.created_at) < cutoff
    return False

