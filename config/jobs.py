"""The one engine for background jobs: a claim, owner-only writes, a heartbeat, and one stale sweep.

A job is a database row that a worker runs: an ingestion run of a document version, an evaluation run, a chat
answer. The database says who runs what, so a worker may die at any moment without leaving work stuck:

  * Claim (`claim`): a conditional UPDATE takes a job that waits (or whose run died) and gives it a fresh
    token. A second delivery of the same task message finds nothing to take.
  * Owner-only writes (`Job`): every later write of the run is `UPDATE ... WHERE id = ? AND <token> = ?`. A run
    that was swept, superseded (a re-index, a redelivered task) or deleted changes nothing and stops.
  * Heartbeat (`heartbeat`): while a run holds its job, one thread per process stamps `heartbeat_at` every
    JOBS_HEARTBEAT_SECONDS, whatever the run is doing (a slow model call, a large PDF page): a silent job means
    a dead process, never a busy one. One thread beats them all (a chat worker runs hundreds of answers in
    threads, and one connection beating them beats hundreds of idle connections).
  * Sweep (`sweep`, Celery beat every JOBS_SWEEP_SECONDS): a running job silent for JOBS_STALE_AFTER_SECONDS
    is dead, and its kind decides what that means (requeue the document; fail the evaluation or the answer
    with a clear error). Each kind also looks at work no worker took. A reader or a request may sweep one
    job itself (`sweep_kind(..., within=...)`) rather than wait for the next beat.

Times are the database's (the statement's, not the transaction's), the one clock every process shares. Apps
register their kinds in AppConfig.ready(); this module imports no app but accounts' tenancy.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.tenancy import system_scope

log = logging.getLogger(__name__)

# A beat never queues behind the run's own row lock (held while it writes a batch): it skips that beat instead.
BEAT_LOCK_TIMEOUT = "2s"


class DatabaseNow(models.Func):
    """The database clock at this statement (`Now()` is the transaction's start, which a long one leaves behind)."""

    template = "statement_timestamp()"
    output_field = models.DateTimeField()


def stale(*, now: datetime | None = None) -> Q:
    """Jobs whose run has been silent for JOBS_STALE_AFTER_SECONDS, by the database clock unless `now` is given."""
    cutoff = (now or DatabaseNow()) - timedelta(seconds=settings.JOBS_STALE_AFTER_SECONDS)
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)


def is_stale(heartbeat_at: datetime | None, *, now: datetime | None = None) -> bool:
    """`stale()` for a row already loaded (this process's clock): whether a sweep is worth asking for."""
    return heartbeat_at is None or \
        heartbeat_at < (now or timezone.now()) - timedelta(seconds=settings.JOBS_STALE_AFTER_SECONDS)


# ------------------------------------------------------------------ claim and owner-only writes

def claim(waiting: QuerySet, *, token_field: str = "claim_token", **fields) -> str | None:
    """Take the job `waiting` selects (its id and the states it may be taken from) under a fresh token, setting
    `fields` too. The token, or None when there was nothing to take."""
    token = uuid.uuid4().hex
    claimed = waiting.update(**{token_field: token, "heartbeat_at": DatabaseNow(), **fields})
    return token if claimed else None


class Job:
    """A claimed job as its run holds it: `match` narrows ownership further (e.g. the document version)."""

    def __init__(self, model: type[models.Model], pk: int, token: str, *, token_field: str = "claim_token",
                 **match):
        self.model, self.pk, self.token, self.token_field, self.match = model, pk, token, token_field, match

    def __repr__(self) -> str:
        return f"{self.model.__name__} {self.pk}"

    def owned(self) -> QuerySet:
        """The job's row while this run owns it; empty once it does not."""
        return self.model.objects.filter(pk=self.pk, **{self.token_field: self.token}, **self.match)

    def update(self, **fields) -> bool:
        """Write while the run owns the job (a write is a sign of life too); False once it does not."""
        fields.setdefault("heartbeat_at", DatabaseNow())
        return bool(self.owned().update(**fields))

    def beat(self) -> bool:
        """One heartbeat. False when the run no longer owns the job; DatabaseError when the row stayed locked."""
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = %s", [BEAT_LOCK_TIMEOUT])
            return self.update()


# ------------------------------------------------------------------ heartbeats

class Heartbeat:
    """One job's beats while its run goes on: how many were sent, and `lost` once one found the job gone."""

    def __init__(self, job: Job, interval: float):
        self.job, self.interval = job, interval
        self.beats = 0
        self.lost = False
        self.due = time.monotonic() + interval
        self.busy = threading.Lock()  # held during a beat: the run's end waits for it


@contextmanager
def heartbeat(job: Job, *, interval: float | None = None) -> Iterator[Heartbeat]:
    """Beat `job` every `interval` seconds (JOBS_HEARTBEAT_SECONDS) while the block runs; no beat of it is
    sent once the block has ended. An interval of 0 sends none."""
    beats = Heartbeat(job, settings.JOBS_HEARTBEAT_SECONDS if interval is None else interval)
    if beats.interval > 0:
        _beater.add(beats)
    try:
        yield beats
    finally:
        _beater.remove(beats)


class _Beater:
    """The process's beat thread: it runs while some job is held, with one database connection."""

    def __init__(self):
        self.wake = threading.Condition()
        self.held: set[Heartbeat] = set()
        self.thread: threading.Thread | None = None

    def add(self, beats: Heartbeat) -> None:
        with self.wake:
            self.held.add(beats)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="job-heartbeats", daemon=True)
                self.thread.start()
            self.wake.notify()

    def remove(self, beats: Heartbeat) -> None:
        with self.wake:
            self.held.discard(beats)
            self.wake.notify()
        with beats.busy:  # a beat under way ends before the run does
            pass

    def _due(self) -> list[Heartbeat] | None:
        """The beats due now, after waiting for the first; None when no job is held (the thread ends)."""
        with self.wake:
            while True:
                if not self.held:
                    self.thread = None
                    return None
                now = time.monotonic()
                due = [beats for beats in self.held if beats.due <= now]
                if due:
                    return due
                self.wake.wait(min(beats.due for beats in self.held) - now)

    def _run(self) -> None:
        # A new thread has its own database connection and an empty tenant scope; it beats every tenant's jobs.
        try:
            with system_scope():
                while (due := self._due()) is not None:
                    for beats in due:
                        self._beat(beats)
        finally:
            connection.close()

    def _beat(self, beats: Heartbeat) -> None:
        with beats.busy:
            with self.wake:
                if beats not in self.held:  # the run ended meanwhile
                    return
            beats.due = time.monotonic() + beats.interval
            try:
                alive = beats.job.beat()
            except DatabaseError as exc:  # lock timeout or the database away: the next beat may pass
                log.info("%r: heartbeat skipped (%s)", beats.job, exc)
                connection.close_if_unusable_or_obsolete()
                return
            beats.beats += 1
            if not alive:
                beats.lost = True
                with self.wake:
                    self.held.discard(beats)


_beater = _Beater()
os.register_at_fork(after_in_child=_beater.__init__)  # a forked worker starts with no jobs and no thread


# ------------------------------------------------------------------ the stale sweep

@dataclass(frozen=True)
class Kind:
    """What the sweep does with one kind of job. Both callbacks get a queryset and the time of the sweep and
    return counts for the report; every write they make goes through that queryset, so it stays conditional
    (a job that beat or ended meanwhile is left alone)."""

    name: str
    model: type[models.Model]
    running: Q  # a job a run holds now
    on_stale: Callable[[QuerySet, datetime], dict]  # the running jobs gone silent: requeue or fail them
    on_waiting: Callable[[QuerySet, datetime], dict] | None = None  # all of the kind's jobs: work nobody took


def dispatch_or_leave_to_sweep(dispatch: Callable[[], object], *, label: str) -> None:
    """Send waiting jobs now (after a commit, or a run's end). A broker outage must not fail the caller: the job
    sweep sends them later."""
    try:
        dispatch()
    except Exception:
        log.warning("%s dispatch failed; the job sweep will retry", label, exc_info=True)


def requeue_or_fail(dead: QuerySet, now: datetime, *, max_attempts: int, failed: dict, requeued: dict,
                    label: str) -> dict:
    """The usual on_stale: a dead run's job goes back to waiting (`requeued` fields), or fails (`failed` fields)
    once it has been claimed `max_attempts` times; the claim and dispatch are cleared either way."""
    cleared = {"claim_token": "", "dispatched_at": None, "updated_at": now}
    given_up = dead.filter(attempts__gte=max_attempts).update(**cleared, finished_at=now, **failed)
    back = dead.filter(attempts__lt=max_attempts).update(**cleared, **requeued)
    if given_up or back:
        log.warning("%s: %s stalled runs requeued, %s given up", label, back, given_up)
    return {"requeued": back, "failed": given_up}


_kinds: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    _kinds[kind.name] = kind
    return kind


def sweep_kind(kind: Kind, *, within: QuerySet | None = None, now: datetime | None = None) -> dict:
    """Sweep one kind's jobs: every tenant's, or those of `within` (a reader's own answer, a KB's runs)."""
    if within is None:
        with system_scope():
            return sweep_kind(kind, within=kind.model.objects.all(), now=now)
    at = now or timezone.now()
    report = dict(kind.on_stale(within.filter(kind.running).filter(stale(now=now)), at))
    if kind.on_waiting is not None:
        report.update(kind.on_waiting(within, at))
    return report


def sweep(*, now: datetime | None = None) -> dict[str, dict]:
    """Every registered kind, each on its own (one failing, say answers while Redis is away, stops no other).
    Kinds log what they recovered themselves."""
    reports = {}
    for kind in list(_kinds.values()):
        try:
            reports[kind.name] = sweep_kind(kind, now=now)
        except Exception as exc:
            log.exception("job sweep: %s failed", kind.name)
            reports[kind.name] = {"error": type(exc).__name__}
    return reports


@shared_task(name="jobs.sweep", ignore_result=True)
def sweep_task() -> dict:
    return sweep()
