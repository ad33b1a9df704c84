"""Running the answer's async part (gateway stream, Redis publishing) from a sync Celery task.

A worker process keeps ONE event loop in a background thread for this, so the gateway's pooled HTTP clients
and Redis connections live across answers: creating an httpx client costs ~100 ms (TLS setup), which a fresh
loop per answer would add to every answer's time to first token.

Inside a transaction (tests wrapped in one, or a caller's atomic block) the coroutine instead runs through
async_to_sync on a throwaway loop, so that its database work happens on this thread's connection and sees the
uncommitted rows.

The calling thread only waits while the answer streams (its database work runs on the loop's own thread), so with
a connection pool it hands its connection back first: the chat worker runs many answers in threads (`-P threads`,
see scripts/run-app) sharing a small pool, and a connection held through every generation would cap the answers
in flight at the pool's size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading

from asgiref.sync import async_to_sync, sync_to_async
from django.db import close_old_connections, connection

from config.connections import release_connection

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="chat-llm-loop", daemon=True).start()
            _loop = loop
        return _loop


async def _with_cleanup(factory):
    try:
        return await factory()
    finally:
        # The loop's DB work runs in asgiref's shared sync thread; let Django retire its connection when old.
        await sync_to_async(close_old_connections)()


def uses_shared_loop() -> bool:
    return not connection.in_atomic_block


def run(factory):
    """Run `factory()` (a coroutine function without arguments) to completion and return its result.

    The caller's context variables (tenant scope, request id) are visible inside.
    """
    if not uses_shared_loop():
        async def call():
            return await factory()

        return async_to_sync(call)()
    if connection.pool is not None:  # without a pool (one answer per process) keeping it saves a reconnect
        release_connection()
    loop = _shared_loop()
    context = contextvars.copy_context()
    done: concurrent.futures.Future = concurrent.futures.Future()

    def start():
        task = loop.create_task(_with_cleanup(factory), context=context)

        def finished(t: asyncio.Task):
            if t.cancelled():
                done.cancel()
            elif t.exception() is not None:
                done.set_exception(t.exception())
            else:
                done.set_result(t.result())

        task.add_done_callback(finished)

    loop.call_soon_threadsafe(start)
    return done.result()
