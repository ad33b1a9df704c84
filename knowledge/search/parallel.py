"""The dense side of a hybrid search runs beside the BM25 side, on this process's second database connection.

Both sides are mostly waiting on PostgreSQL (and the query embedding is numpy work that releases the GIL), so
on a multi-core server a hybrid search takes about as long as its slower side instead of their sum. A search
inside a transaction runs its sides one after the other: another connection would not see that transaction's
rows (tests, callers that search what they have just written).
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connection, connections

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def side_by_side() -> bool:
    return settings.SEARCH_SIDES_IN_PARALLEL and not connection.in_atomic_block


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:  # created lazily: a forked worker process makes its own
                # One thread: an ASGI process runs its sync views one at a time anyway.
                _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search-side")
    return _executor


def _run(context: contextvars.Context, fn):
    close_old_connections()  # a connection broken or past its age is replaced, as a request would
    try:
        return context.run(fn)  # the caller's tenant scope (a context variable) comes along
    finally:
        close_old_connections()  # with a pool, the connection goes back to it


def submit(fn) -> Future:
    return _pool().submit(_run, contextvars.copy_context(), fn)


def shutdown() -> None:
    """Close the side thread's database connection and stop the thread (tests; it restarts on next use)."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.submit(connections.close_all).result()
        executor.shutdown(wait=True)
