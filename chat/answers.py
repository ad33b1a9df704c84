"""Waiting for an answer from a request thread: the JSON API waits for the end, streaming APIs for the start.

Both read the answer's Redis stream through the same core as the SSE relay (chat.sse.answer_events), so they
see exactly what a browser sees, and never wait forever (the core fails an answer no worker picked up).
The wait lasts as long as the model takes, so the request's database connection goes back first: hundreds of
clients may wait at once on a web process with a pool of twenty (config.connections). What the view does
afterwards takes a connection again.
"""

from __future__ import annotations

import time

from asgiref.sync import async_to_sync
from django.conf import settings

from chat.sse import answer_events
from config.connections import release_connection


def wait_timeout_s() -> int:
    return settings.CHAT_API_WAIT_S


async def _collect(tenant, message_id: int, *, until_first_token: bool, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    events = []
    async for entry_id, kind, data in answer_events(tenant=tenant, message_id=message_id, tick_ms=1000):
        if kind in ("ping", "tick"):
            if time.monotonic() > deadline:
                break
            continue
        events.append((entry_id, kind, data))
        if kind == "reset" and not until_first_token:
            events = [e for e in events if e[1] not in ("token", "reset")]
        if kind in ("done", "error") or (until_first_token and kind == "token"):
            break
    return events


def _wait(tenant, message_id: int, *, until_first_token: bool) -> list:
    release_connection()
    return async_to_sync(_collect)(tenant, message_id, until_first_token=until_first_token,
                                   timeout_s=wait_timeout_s())


def wait_for_end(*, tenant, message_id: int) -> tuple[str, dict]:
    """("done", data) or ("error", data) for the answer; ("timeout", {}) if it is still going after the limit."""
    events = _wait(tenant, message_id, until_first_token=False)
    if events and events[-1][1] in ("done", "error"):
        return events[-1][1], events[-1][2]
    return "timeout", {}


def wait_for_start(*, tenant, message_id: int) -> tuple[str, dict, list]:
    """("token"|"done"|"error", data, events read so far) at the answer's first token or its end.

    A streaming endpoint calls this before it sends headers, so failures that happen before any text (unknown
    model, quota, model down) still get a proper HTTP status instead of a 200 stream with an error inside. The
    events go to the stream as its prelude, so nothing is read twice.
    """
    events = _wait(tenant, message_id, until_first_token=True)
    if events and events[-1][1] in ("token", "done", "error"):
        return events[-1][1], events[-1][2], events
    return "timeout", {}, events
