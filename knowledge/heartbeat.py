"""A claimed ingestion run's sign of life, sent from a side thread.

The run itself writes `heartbeat_at` at every stage and batch, but one step can take long (a slow embedding
call, a big PDF page, a large delete): on its own the run would look dead to the watchdog. This thread beats
every INGEST_HEARTBEAT_SECONDS whatever the run is doing, so the watchdog can treat a few missed beats
(INGEST_STALE_AFTER_SECONDS) as a dead worker and hand the document on within a minute.

Each beat is an UPDATE conditional on the run's claim token and version, like every write of the run: once
the watchdog, a re-index or a delete took the document away, a beat changes nothing and the thread stops.
Times come from the database clock, the one the watchdog compares with.
"""

from __future__ import annotations

import logging
import threading

from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Now

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from knowledge.models import Document

log = logging.getLogger(__name__)

# A beat never queues behind the run's own row lock (held while it writes a batch): it skips that beat instead.
LOCK_TIMEOUT = "2s"


class Heartbeat:
    def __init__(self, *, tenant: Tenant, document_id: int, token: str, version: int, interval: float):
        self.tenant, self.document_id, self.token, self.version = tenant, document_id, token, version
        self.interval = interval
        self.beats = 0
        self.lost = False  # a beat found the run no longer owns the document
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name=f"ingest-heartbeat-{self.document_id}",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def beat(self) -> bool:
        """One beat. False when the run no longer owns the document."""
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = %s", [LOCK_TIMEOUT])
            updated = Document.objects.filter(
                pk=self.document_id, claim_token=self.token, version=self.version,
            ).update(heartbeat_at=Now())
        self.beats += 1
        return bool(updated)

    def _loop(self) -> None:
        # A new thread has its own database connection and an empty tenant scope.
        try:
            with tenant_scope(self.tenant):
                while not self._stop.wait(self.interval):
                    try:
                        alive = self.beat()
                    except DatabaseError as exc:  # lock timeout or the database away: the next beat may pass
                        log.info("document %s: heartbeat skipped (%s)", self.document_id, exc)
                        connection.close_if_unusable_or_obsolete()
                        continue
                    if not alive:
                        self.lost = True
                        return
        finally:
            connection.close()
