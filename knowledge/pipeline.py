"""The ingestion pipeline: claim a document version, parse, chunk, embed in batches, index, mark ready.

Crash safety. The database is the queue; Celery messages only say "look at document N, version V".
  * Claim: a conditional UPDATE moves a *queued* document of the expected version to "parsing" with a fresh
    claim token (config.jobs, the one job engine). Every later write of that run is conditional on the token
    (the document row is locked with SELECT ... FOR UPDATE inside each write transaction), so a run that was
    superseded (re-index, delete, or the job sweep handing the work to another worker) stops without writing.
  * Chunks are written per embedding batch, keyed by (document, ordinal) with ON CONFLICT DO NOTHING. A run
    that resumes a version re-parses (cheap, deterministic) and embeds only the ordinals still missing, so
    there are never duplicate or missing chunks. A new version first deletes the old chunks in one transaction.
  * A claimed run beats every JOBS_HEARTBEAT_SECONDS from the process's beat thread, however long one step
    takes. A worker that dies leaves the document in parsing/chunking/embedding with a heartbeat that stops;
    after JOBS_STALE_AFTER_SECONDS (a few missed beats) the job sweep (Celery beat, INGEST_JOB) puts it back in
    the queue, or fails it after INGEST_MAX_ATTEMPTS claims. Heartbeats and the stale cutoff both use the
    database clock.
  * Transient errors (network, rate limits, database hiccups) requeue the document with exponential backoff
    (`retry_at`); permanent ones (bad file, refused key) fail it with the reason shown to the user.
  * A KB on a model too slow to wait for (knowledge.embeddings.EMBEDDED_IN_BACKGROUND: e5) gets its chunks
    without vectors: the document is ready, found by keywords at once, and a fill job of knowledge.vectors embeds
    them once the KB's ingestion has settled.
  * Size: right after parsing, degenerate text (knowledge.degenerate) and documents over the plan's chunk
    limits (knowledge.limits) fail with the reason, before any chunking or embedding work.

Fairness. Documents are not pushed to Celery at upload. `dispatch()` keeps at most INGEST_DISPATCH_WINDOW
messages out for all tenants together and fills free slots round-robin across tenants, a tenant with fewer
documents in flight first. A tenant with 10,000 queued files therefore holds at most the window, and another
tenant's upload is dispatched as soon as one slot frees. A run that has embedded for INGEST_YIELD_AFTER_SECONDS
while another tenant's document waits goes back to the queue between two batches (keeping its chunks, without
counting an attempt), so one large document cannot hold a worker slot while others wait.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_noop

from accounts.models import Tenant
from accounts.tenancy import system_scope, tenant_scope
from billing.types import Stage, UsageContext
from config import broker, jobs
from knowledge import chunking, limits, parsers
from knowledge.embed_ahead import EmbedAhead
from knowledge.embeddings import Embedder, EmbeddingError, embedded_in_background, get_embedder
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.parsers import ParseError, UnsupportedFile, format_for
from knowledge.search import services as search
from knowledge.vectors import kb_model_locked, request_fill

log = logging.getLogger(__name__)

QUEUED, PARSING, CHUNKING, EMBEDDING, READY, FAILED = (
    Document.Status.QUEUED, Document.Status.PARSING, Document.Status.CHUNKING, Document.Status.EMBEDDING,
    Document.Status.READY, Document.Status.FAILED,
)
IN_PROGRESS = (PARSING, CHUNKING, EMBEDDING)
DISPATCH_LOCK = 0x6B6E6F77  # pg advisory lock key: one dispatcher at a time
# A message is looked for in the broker once it is this old (the dispatcher commits, then sends), so with the
# sweep every JOBS_SWEEP_SECONDS a lost one is sent again within 10 + 15 s; the second look comes this much later.
LOST_CHECK_AFTER_SECONDS = 10
LOST_CONFIRM_SECONDS = 1.0

# Messages stored on the document (shown in the UI, translated there when they match a catalog entry).
MSG_FILE_MISSING = gettext_noop("The original file is missing from storage; upload it again.")
MSG_NO_CHUNKS = gettext_noop("The file contains no text.")
MSG_INTERRUPTED = gettext_noop("The worker stopped while processing this document; it will be retried.")
MSG_TOO_LONG = gettext_noop("Processing took too long and was stopped.")


class Superseded(Exception):
    """This run no longer owns the document (re-indexed, deleted, or reclaimed after a stall)."""


class Transient(Exception):
    """Worth retrying later."""


class Yielded(Exception):
    """The run gives its worker slot to waiting work and resumes later."""


# ------------------------------------------------------------------ one run


class Run:
    def __init__(self, tenant: Tenant, document: Document, token: str, *, may_yield: bool = False):
        self.tenant = tenant
        self.may_yield = may_yield
        self.document = document
        self.kb: KnowledgeBase = document.kb
        self.version = document.version
        self.job = jobs.Job(Document, document.pk, token, version=self.version)
        self.started = time.monotonic()
        self._yield_checked = 0.0
        self.terms: search.ChunkTerms | None = None  # the BM25 terms of the chunks this run stores

    # ---- conditional writes
    def _lock(self) -> None:
        if not self.job.owned().select_for_update().values_list("pk", flat=True).first():
            raise Superseded

    def _set(self, **fields) -> None:
        fields.setdefault("updated_at", timezone.now())
        if not self.job.update(**fields):
            raise Superseded
        for key, value in fields.items():
            if not hasattr(value, "resolve_expression"):
                setattr(self.document, key, value)

    def heartbeat(self, *_args) -> None:
        self._set()

    # ---- stages
    def execute(self) -> None:
        doc, kb = self.document, self.kb
        try:
            fmt = format_for(doc.filename)
        except UnsupportedFile as exc:
            raise ParseError(str(exc)) from exc
        data = self._read_file()
        parsed = parsers.parse(fmt, data, filename=doc.filename, progress=self.heartbeat)
        del data
        allowed = limits.check_parsed(tenant=self.tenant, document_id=doc.pk, parsed=parsed, kb=kb)
        update = {"status": CHUNKING, "page_count": parsed.page_count, "warnings": parsed.warnings}
        if parsed.title and doc.title == doc.filename:
            update["title"] = parsed.title[:300]
        self._set(**update)

        drafts = chunking.chunk_document(parsed, size=kb.chunk_size, overlap=kb.chunk_overlap)
        del parsed
        if not drafts:
            raise ParseError(MSG_NO_CHUNKS)
        limits.check_document(allowed, len(drafts))
        with transaction.atomic():
            limits.reserve(tenant=self.tenant, document_id=doc.pk, allowed=allowed, chunks=len(drafts))
            self._lock()
            fresh = Document.objects.filter(pk=doc.pk).values("chunks_version", "chunks_total").get()
            if fresh["chunks_version"] != self.version or fresh["chunks_total"] != len(drafts):
                search.postings_delete_document(tenant=self.tenant, document_id=doc.pk)
                Chunk.objects.filter(document_id=doc.pk).delete()
            existing = set(Chunk.objects.filter(document_id=doc.pk).values_list("ordinal", flat=True))
            self._set(status=EMBEDDING, chunks_version=self.version, chunks_total=len(drafts),
                      chunks_embedded=len(existing))
        prepared = time.monotonic() - self.started  # what resuming costs: read, parse, chunk again

        # None: the KB's model embeds in the background (its vectors are filled once the document is ready).
        embedder = None if embedded_in_background(kb.embedding_model) else self._embedder(kb.embedding_model,
                                                                                            kb.embedding_dim)
        todo = [d for d in drafts if d.ordinal not in existing]
        batch_size = max(1, settings.INGEST_EMBED_BATCH)
        batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
        self.terms = search.ChunkTerms(kb=kb, document_id=doc.pk, title=doc.title)
        embedding_since = time.monotonic()
        with EmbedAhead(self._embed) as ahead:  # batch N+1 embeds while batch N is stored and analysed
            for index, batch in enumerate(batches):
                vectors = None if embedder is None else ahead.vectors(embedder, batch)
                following = batches[index + 1] if index + 1 < len(batches) else None
                # Asked before the next batch is embedded ahead, which a run that yields would waste.
                stop = following is not None and self.may_yield and self._should_yield(
                    time.monotonic() - embedding_since, prepared)
                if following is not None and not stop and embedder is not None:
                    ahead.prefetch(embedder, following)
                embedder = self._store_batch(embedder, batch, vectors)
                if stop:
                    raise Yielded
                for draft in batch:  # the BM25 terms _finish indexes
                    self.terms.add(ordinal=draft.ordinal, heading_path=draft.heading_path, text=draft.text)

        self._finish(len(drafts))

    @staticmethod
    def _embedder(model: str, dim: int) -> Embedder:
        embedder = get_embedder(model)
        if embedder.dim != dim:
            raise EmbeddingError(
                f"The embedding model gives {embedder.dim}-dimensional vectors but the knowledge base stores "
                f"{dim}; re-create the knowledge base or change its model."
            )
        return embedder

    def _embed(self, embedder: Embedder, batch: list):
        return embedder.embed_documents([d.embed_text for d in batch], tenant=self.tenant,
                                        usage=self._usage(batch[0].ordinal, embedder.name))

    def _store_batch(self, embedder: Embedder | None, batch: list, vectors) -> Embedder | None:
        """Store one batch embedded by `embedder`, with the KB's model at the moment of writing: a vector upgrade
        (knowledge.vectors) may have switched it meanwhile, and then the batch is embedded again with the new
        one, or stored without vectors when the new one embeds in the background. Returns the embedder of the
        KB's model (None: in the background)."""
        doc, kb = self.document, self.kb
        while True:
            with transaction.atomic():
                # The KB first: waiting for a switch under way, the run holds no lock of its own (its beats go on).
                current = kb_model_locked(kb.pk)  # held to the commit: a switch waits for it
                if current is None:
                    raise Superseded
                self._lock()
                later = embedded_in_background(current[0])
                if later or (embedder is not None and current[0] == embedder.name):
                    if later:  # the fill embeds them (vectors of another model would not be comparable)
                        embedder, vectors = None, [None] * len(batch)
                    rows = [
                        Chunk(tenant_id=self.tenant.pk, document_id=doc.pk, kb_id=kb.pk, ordinal=d.ordinal,
                              text=d.text, page=d.page, heading_path=d.heading_path, char_start=d.char_start,
                              char_end=d.char_end, token_count=d.token_count, embedding=vector,
                              embedding_dim=embedder.dim if embedder else None)
                        for d, vector in zip(batch, vectors, strict=True)
                    ]
                    Chunk.objects.bulk_create(rows, ignore_conflicts=True)
                    self._set(chunks_embedded=Chunk.objects.filter(document_id=doc.pk).count())
                    return embedder
            log.info("document %s: the knowledge base switched to %s; embedding again", doc.pk, current[0])
            embedder = self._embedder(*current)
            vectors = self._embed(embedder, batch)

    def _should_yield(self, embedding_for: float, prepared: float) -> bool:
        """After a slice of embedding (at least four times what resuming costs), when another tenant waits."""
        if embedding_for < max(settings.INGEST_YIELD_AFTER_SECONDS, 4 * prepared):
            return False
        now = time.monotonic()
        if now - self._yield_checked < 5:  # one query every few seconds at most
            return False
        self._yield_checked = now
        return others_waiting(tenant_id=self.tenant.pk)

    def _finish(self, expected: int) -> None:
        doc = self.document
        with transaction.atomic():
            self._lock()
            stored = Chunk.objects.filter(document_id=doc.pk).count()
            if stored != expected:  # cannot happen unless something else wrote chunks: start over
                raise Transient(f"chunk count {stored} != {expected}")
            doc.refresh_from_db()
            search.postings_index_document(tenant=self.tenant, document=doc, terms=self.terms)
            now = timezone.now()
            self._set(status=READY, finished_at=now, claim_token="", dispatched_at=None, error="",
                      chunks_embedded=stored)
            if Chunk.objects.filter(document_id=doc.pk, embedding_dim__isnull=True).exists():
                request_fill(tenant=self.tenant, kb=self.kb)  # ingestion first: it waits for the KB to settle

    def _usage(self, first_ordinal: int, model: str):
        # The model is part of the key only once a switch changed it: keys of runs before stay the same.
        suffix = "" if model == self.kb.embedding_model else f":{model}"
        return UsageContext(
            stage=Stage.EMBEDDING,
            idempotency_key=f"embed:{self.document.pk}:v{self.version}:{first_ordinal}{suffix}",
            user_id=self.document.uploaded_by_id, document_id=self.document.pk,
        )

    def _read_file(self) -> bytes:
        doc = self.document
        if not doc.file:
            raise ParseError(MSG_FILE_MISSING)
        try:
            with doc.file.storage.open(doc.file.name, "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise ParseError(MSG_FILE_MISSING) from exc
        except OSError as exc:  # network storage hiccup
            raise Transient(f"storage: {exc}") from exc

    # ---- endings
    def fail(self, message: str) -> None:
        now = timezone.now()
        self.job.update(status=FAILED, error=message[:2000], finished_at=now, claim_token="", dispatched_at=None,
                        updated_at=now)

    def release(self) -> None:
        """Back to the queue to resume later: the chunks stay, and this claim does not count as an attempt."""
        self.job.update(status=QUEUED, claim_token="", dispatched_at=None, retry_at=None, error="",
                        attempts=F("attempts") - 1, updated_at=timezone.now())

    def defer(self, reason: str) -> None:
        """Back to the queue with backoff, or failed when the attempts are used up."""
        attempts = Document.objects.filter(pk=self.document.pk).values_list("attempts", flat=True).first() or 0
        max_attempts = settings.INGEST_MAX_ATTEMPTS
        if attempts >= max_attempts:
            self.fail(f"Gave up after {attempts} attempts. Last error: {reason}")
            return
        delay = min(settings.INGEST_RETRY_BASE_SECONDS * (3 ** (attempts - 1)), 900) * random.uniform(0.8, 1.2)
        now = timezone.now()
        self.job.update(status=QUEUED, claim_token="", dispatched_at=None, retry_at=now + timedelta(seconds=delay),
                        error=f"Retrying: {reason}"[:2000], updated_at=now)


def claim(*, document_id: int, version: int | None, force: bool = False) -> str | None:
    """Take a queued document for processing; the claim token, or None when it is not ours to take."""
    now = timezone.now()
    waiting = Document.objects.filter(pk=document_id, status=QUEUED)
    if version is not None:
        waiting = waiting.filter(version=version)
    if not force:
        waiting = waiting.filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
    return jobs.claim(waiting, status=PARSING, started_at=now, finished_at=None, attempts=F("attempts") + 1,
                      retry_at=None, error="", updated_at=now)


def run_document(*, document_id: int, version: int | None = None, force: bool = False, may_yield: bool = False) -> str:
    """Process one document if it is waiting. Returns what happened: ready, failed, deferred, skipped, yielded...
    `may_yield`: a worker's run, which hands its slot to other tenants' waiting work now and then (an inline
    run has no slot to share and always goes to the end)."""
    with system_scope():
        tenant_id = Document.all_tenants.filter(pk=document_id).values_list("tenant_id", flat=True).first()
    if tenant_id is None:
        return "gone"
    tenant = Tenant.objects.get(pk=tenant_id)
    with tenant_scope(tenant):
        return _run(tenant, document_id, version, force, may_yield)


def _run(tenant: Tenant, document_id: int, version: int | None, force: bool, may_yield: bool) -> str:
    token = claim(document_id=document_id, version=version, force=force)
    if token is None:
        return "skipped"
    document = Document.objects.select_related("kb").get(pk=document_id)
    run = Run(tenant, document, token, may_yield=may_yield)
    try:
        with jobs.heartbeat(run.job):
            run.execute()
        return "ready"
    except Yielded:
        run.release()
        log.info("document %s v%s yields its worker slot to waiting work", document_id, run.version)
        return "yielded"
    except Superseded:
        log.info("document %s v%s superseded during processing", document_id, run.version)
        return "superseded"
    except ParseError as exc:
        run.fail(exc.message)
        return "failed"
    except EmbeddingError as exc:
        if exc.retryable:
            run.defer(exc.message)
            return "deferred"
        run.fail(exc.message)
        return "failed"
    except SoftTimeLimitExceeded:
        run.fail(MSG_TOO_LONG)
        return "failed"
    except (OperationalError, InterfaceError) as exc:
        log.warning("document %s: database error, will retry: %s", document_id, exc)
        connection.close()  # the next query reconnects
        _quietly(run.defer, "database unavailable")
        return "deferred"
    except Transient as exc:
        run.defer(str(exc))
        return "deferred"
    except Exception as exc:
        log.exception("document %s: unexpected error", document_id)
        if isinstance(exc, DatabaseError):
            connection.close()
        _quietly(run.defer, f"unexpected error ({type(exc).__name__})")
        return "deferred"


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # the job sweep recovers the document later
        log.exception("could not record the outcome; the job sweep will requeue the document")


# ------------------------------------------------------------------ dispatcher and job sweep

_PICK_SQL = """
WITH waiting AS (
    SELECT DISTINCT tenant_id FROM knowledge_document WHERE status = 'queued' AND dispatched_at IS NULL
), busy AS (
    SELECT tenant_id, count(*) AS n FROM knowledge_document
    WHERE (status = 'queued' AND dispatched_at IS NOT NULL) OR status IN ('parsing', 'chunking', 'embedding')
    GROUP BY tenant_id
)
SELECT id, version FROM (
    SELECT x.id, x.version, x.created_at,
           row_number() OVER (PARTITION BY w.tenant_id ORDER BY x.created_at, x.id) + COALESCE(b.n, 0) AS turn
    FROM waiting w
    LEFT JOIN busy b ON b.tenant_id = w.tenant_id
    CROSS JOIN LATERAL (
        SELECT d.id, d.version, d.created_at FROM knowledge_document d
        WHERE d.tenant_id = w.tenant_id AND d.status = 'queued' AND d.dispatched_at IS NULL
          AND (d.retry_at IS NULL OR d.retry_at <= now())
        ORDER BY d.created_at, d.id
        LIMIT %(slots)s
    ) x
) picks
ORDER BY turn, created_at, id
LIMIT %(slots)s
"""


def pick_fair(slots: int) -> list[tuple[int, int]]:
    """Up to `slots` waiting (document id, version) pairs, round-robin across tenants (system scope)."""
    if slots <= 0:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_PICK_SQL, {"slots": slots})
        return [(row[0], row[1]) for row in cursor.fetchall()]


def others_waiting(*, tenant_id: int) -> bool:
    """Another tenant has a document that could run now (system scope: a question about everyone's queue)."""
    with system_scope():
        return Document.all_tenants.filter(status=QUEUED).exclude(tenant_id=tenant_id).filter(
            Q(retry_at__isnull=True) | Q(retry_at__lte=timezone.now())
        ).exists()


def in_flight() -> int:
    return Document.all_tenants.filter(
        Q(status=QUEUED, dispatched_at__isnull=False) | Q(status__in=IN_PROGRESS)
    ).count()


def message_id(document_id: int, version: int) -> str:
    """The task id of a document version's message: the sweep asks the broker whether it still holds it."""
    return f"ingest-{document_id}-v{version}"


def send_document(document_id: int, version: int) -> None:
    from knowledge.tasks import process_document  # cycle: knowledge.tasks -> knowledge.pipeline

    process_document.apply_async((document_id, version), queue=settings.INGEST_QUEUE,
                                 task_id=message_id(document_id, version))


def dispatch(*, send=None) -> int:
    """Send task messages for waiting documents while the window has room. Returns how many were sent."""
    send = send or send_document
    window = max(1, settings.INGEST_DISPATCH_WINDOW)
    with system_scope():
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DISPATCH_LOCK])
            picks = pick_fair(window - in_flight())
            if picks:
                Document.all_tenants.filter(pk__in=[p[0] for p in picks]).update(dispatched_at=timezone.now())
        for doc_id, version in picks:
            send(doc_id, version)
    return len(picks)


def request_dispatch() -> None:
    """After an upload or re-index commits."""
    jobs.dispatch_or_leave_to_sweep(dispatch, label="ingest")


def _requeue_dead_runs(dead: QuerySet, now: datetime) -> dict:
    """Runs whose worker died go back to the queue; a document that keeps crashing workers fails."""
    max_attempts = settings.INGEST_MAX_ATTEMPTS
    return jobs.requeue_or_fail(
        dead, now, max_attempts=max_attempts, label="ingest",
        failed={"status": FAILED, "error": f"Processing was interrupted {max_attempts} times (the file may be too "
                                            "large for the worker)."},
        requeued={"status": QUEUED, "retry_at": None, "error": MSG_INTERRUPTED})


def _resend_lost(documents: QuerySet, now: datetime) -> dict:
    """Documents whose task message is gone go back to the queue, and the window is filled again.

    A message is lost when the broker no longer holds it (a broker restart, a deleted queue): it is neither
    waiting in the ingest queue nor taken by a worker, LOST_CHECK_AFTER_SECONDS after it was sent, in two looks
    a moment apart (a message passes between the queue and a worker's hands in between). A message waiting
    behind busy workers is never sent twice. One a worker took but never started (the worker died holding
    it) is lost after INGEST_LOST_AFTER_SECONDS, as is any message when the broker cannot be looked into."""
    out = documents.filter(status=QUEUED, dispatched_at__isnull=False)
    suspects = list(out.filter(dispatched_at__lt=now - timedelta(seconds=LOST_CHECK_AFTER_SECONDS))
                    .values_list("pk", "version", "dispatched_at"))
    gone = _missing_from_broker(suspects, now) if suspects else []
    if gone is None:  # the broker cannot tell: only the long cutoff
        count = out.filter(dispatched_at__lt=now - timedelta(seconds=settings.INGEST_LOST_AFTER_SECONDS)).update(
            dispatched_at=None)
    else:  # each only if it is still waiting for that same message
        count = sum(out.filter(pk=pk, dispatched_at=at).update(dispatched_at=None) for pk, at in gone)
    if count:
        log.warning("ingest: %s lost task messages sent again", count)
    return {"lost": count, "dispatched": dispatch()}


def _missing_from_broker(suspects: list[tuple[int, int, datetime]], now: datetime) -> list | None:
    """(id, dispatched_at) of the suspects whose message the broker has lost; None when it cannot tell."""
    held = broker.held_messages(settings.INGEST_QUEUE)
    if held is None:
        return None
    taken_cutoff = now.timestamp() - settings.INGEST_LOST_AFTER_SECONDS

    def missing(held, pk, version):
        task_id = message_id(pk, version)
        return task_id not in held or held.taken.get(task_id, taken_cutoff) < taken_cutoff

    suspects = [s for s in suspects if missing(held, s[0], s[1])]
    if suspects:
        time.sleep(LOST_CONFIRM_SECONDS)
        held = broker.held_messages(settings.INGEST_QUEUE)
        suspects = [s for s in suspects if missing(held, s[0], s[1])]
    return [(pk, at) for pk, _version, at in suspects]


INGEST_JOB = jobs.Kind(name="ingest", model=Document, running=Q(status__in=IN_PROGRESS),
                       on_stale=_requeue_dead_runs, on_waiting=_resend_lost)
