"""Database connections of long waits, and a full connection pool.

A web process has a small pool of database connections (DB_POOL_MAX). Django gives a thread a pooled connection
at its first query and takes it back only when the request finishes, so a request that then waits on Redis for
minutes (a JSON chat answer, an SSE stream) would hold one the whole time, and a few dozen waiting clients would
starve everyone else. So:

* `release_connection()` hands the thread's connection back before a long wait; its next query takes one again
  (from the pool: a few microseconds). Never inside a transaction, whose work would be lost (tests run in one).
* `ConnectionMiddleware` does it for every streaming response once the view has returned, and turns a full
  pool (psycopg_pool.PoolTimeout, which Django raises as django.db.OperationalError) or a server out of
  connections into 503 with Retry-After instead of a 500: the API's JSON error under /api/, a short page
  elsewhere.
"""

from __future__ import annotations

import logging
import sys

from django.core.signals import got_request_exception
from django.db import connections
from psycopg.errors import TooManyConnections
from psycopg_pool import PoolTimeout

from config.errors import service_busy

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5


def release_connection() -> None:
    """Give this thread's database connections back (to the pool, or closed) unless a transaction is open."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and not conn.in_atomic_block:
            conn.close()


def is_capacity_error(exc: BaseException | None) -> bool:
    """True when `exc` (or what it wraps) says no database connection could be had: the pool stayed full for its
    whole timeout, or the server refused another client."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, PoolTimeout | TooManyConnections):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _note_capacity_error(sender, request=None, **kwargs) -> None:
    """A middleware's query failed (Django turned it into a 500 before ours could see it): mark the request."""
    if request is not None and is_capacity_error(sys.exc_info()[1]):
        request._db_capacity_error = True


got_request_exception.connect(_note_capacity_error, dispatch_uid="config.connections.capacity")


class ConnectionMiddleware:
    """Release the connection of streaming responses; answer 503 when no connection could be had."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if getattr(request, "_db_capacity_error", False) and response.status_code == 500:
            response = self._busy(request)
        if response.streaming:
            # The body is produced after this returns, for as long as the stream lasts: it must not keep the
            # view's connection (DB work inside streams takes one and gives it back, chat.sse).
            release_connection()
        return response

    def process_exception(self, request, exception):
        if is_capacity_error(exception):
            return self._busy(request)
        return None

    @staticmethod
    def _busy(request):
        log.warning("no database connection for %s %s: answered 503", request.method, request.path)
        return service_busy(request, retry_after=RETRY_AFTER_S)
