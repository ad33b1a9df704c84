"""Waiting chat clients must not hold the web process's pooled database connections (issue 12, section 1).

A live uvicorn in this process with a psycopg pool of POOL_SIZE connections. POOL_SIZE + 1 clients wait on
answers (JSON waits, streams, the browser's SSE, the OpenAI-compatible endpoint); another tenant's plain request
must still be answered at once, not after the pool's timeout with a 500. A pool that really is full answers
503 with Retry-After.
"""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest
from django.db import connection

from chat import streams
from chat.models import Message
from tests.chat.live import asgi_server, backend_pids, close_new_connections
from tests.conftest import web_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
POOL_SIZE = 3
POOL_TIMEOUT_S = 5


@contextlib.contextmanager
def db_pool(*, max_size: int, timeout: float):
    """Give this process a psycopg pool, as DB_POOL_MAX does for a web process (every thread's connection
    shares these settings)."""
    conf = connection.settings_dict
    old_age, old_options = conf["CONN_MAX_AGE"], dict(conf["OPTIONS"])
    connection.close()  # this thread's unpooled connection; its next query takes a pooled one
    conf["CONN_MAX_AGE"] = 0
    conf["OPTIONS"]["pool"] = {"min_size": 1, "max_size": max_size, "timeout": timeout}
    try:
        yield connection.pool
    finally:
        connection.close()
        connection.close_pool()
        conf["OPTIONS"].clear()
        conf["OPTIONS"].update(old_options)
        conf["CONN_MAX_AGE"] = old_age


@pytest.fixture
def live(settings):
    """A live server whose answers never start (no worker): each client waits until the test ends it."""
    before = backend_pids()
    try:
        with db_pool(max_size=POOL_SIZE, timeout=POOL_TIMEOUT_S) as pool, asgi_server() as url:
            yield url, pool
    finally:
        close_new_connections(before)


@pytest.fixture
def no_worker(monkeypatch):
    """Answers are saved and announced but no task message is sent (none would be consumed)."""

    class Nowhere:
        @staticmethod
        def delay(**kwargs):
            return None

    monkeypatch.setattr("chat.tasks.generate_answer", Nowhere)


def _last_message_id() -> int:
    try:
        return Message.all_tenants.order_by("-pk").values_list("pk", flat=True).first() or 0
    finally:
        connection.close()  # the test's own queries must not hold one of the server's few connections


def _answer_ids(after: int) -> list[int]:
    """Answers created since `after`, seen in Redis (each announces itself in its stream when it is queued):
    the database may have no connection to spare while the clients wait."""
    keys = streams.client().keys("ragdesk:chat:*:events")
    return sorted(pk for pk in (int(k.decode().split(":")[2]) for k in keys) if pk > after)


def _finish_all(after: int) -> None:
    """Play the worker: end every answer's stream (the clients see `done`)."""
    for pk in _answer_ids(after):
        streams.publish(pk, "done", {"status": "done", "message": {"id": pk}})


def _session_cookie(tenant_a) -> str:
    try:
        return web_client(tenant_a.owner, tenant_a.tenant).cookies["sessionid"].value
    finally:
        connection.close()


class Waiter(threading.Thread):
    """One client waiting on an answer; `opened` is set once it is waiting (headers in, or the POST sent)."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.opened, self.status, self.error = fn, threading.Event(), None, None

    def run(self):
        try:
            self.status = self.fn(self.opened)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions
            self.error = exc
            self.opened.set()


def _post(url, path, key, body):
    def call(opened):
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
            opened.set()
            with http.stream("POST", path, json=body) as response:
                response.read()
                return response.status_code
    return call


def _get_stream(url, path, *, headers=None, cookies=None):
    def call(opened):
        with httpx.Client(base_url=url, timeout=60, headers=headers, cookies=cookies) as http, \
                http.stream("GET", path) as response:
            opened.set()
            for line in response.iter_lines():
                if line.startswith("event: done"):
                    break
            return response.status_code
    return call


def _waiters(kind: str, url: str, tenant_a, assistant_a, n: int) -> list[Waiter]:
    key = tenant_a.api_key
    if kind == "json":
        return [Waiter(_post(url, f"/api/v1/assistants/{assistant_a.pk}/chat", key, {"message": "Refunds?"}))
                for _ in range(n)]
    if kind == "stream":
        return [Waiter(_post(url, f"/api/v1/assistants/{assistant_a.pk}/chat", key,
                             {"message": "Refunds?", "stream": True})) for _ in range(n)]
    if kind == "openai":
        return [Waiter(_post(url, "/api/v1/openai/chat/completions", key,
                             {"model": assistant_a.name, "messages": [{"role": "user", "content": "Refunds?"}]}))
                for _ in range(n)]
    from chat import services

    answers = [services.question_ask(tenant=tenant_a.tenant, assistant=assistant_a, content="Refunds?",
                                     user=tenant_a.owner)[1] for _ in range(n)]
    connection.close()
    if kind == "follow":
        return [Waiter(_get_stream(url, f"/api/v1/messages/{a.pk}/stream",
                                   headers={"Authorization": f"Bearer {key}"})) for a in answers]
    cookie = _session_cookie(tenant_a)
    return [Waiter(_get_stream(url, f"/chat/messages/{a.pk}/stream?render=1", cookies={"sessionid": cookie}))
            for a in answers]


@pytest.mark.parametrize("kind", ["json", "stream", "openai", "follow", "browser"])
def test_waiting_clients_do_not_starve_other_requests(kind, live, no_worker, scope_a, assistant_a, tenant_b):
    url, _pool = live
    first = _last_message_id()
    for stale in _answer_ids(first):  # left in Redis by an earlier run of the suite (ids start again)
        streams.delete(stale)
    waiters = _waiters(kind, url, scope_a, assistant_a, POOL_SIZE + 1)
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        assert waiter.opened.wait(30)
    deadline = time.monotonic() + 30
    while len(_answer_ids(first)) < len(waiters) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # every client is now waiting on its answer's stream

    started = time.monotonic()
    me = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {tenant_b.api_key}"}, timeout=60)
    elapsed = time.monotonic() - started

    _finish_all(first)
    for waiter in waiters:
        waiter.join(30)
    assert me.status_code == 200, me.text
    assert elapsed < POOL_TIMEOUT_S / 2  # answered at once, not after waiting out the pool's timeout
    assert [w.error for w in waiters] == [None] * len(waiters)
    assert all(w.status in (200, 201) for w in waiters), [w.status for w in waiters]


def test_full_pool_answers_503_with_retry_after(live, scope_a):
    url, pool = live
    connection.close()
    pool.timeout = 0.5  # waiting longer proves nothing more
    cookie = _session_cookie(scope_a)
    held = [pool.getconn() for _ in range(POOL_SIZE)]  # every connection is busy elsewhere
    try:
        api = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {scope_a.api_key}"}, timeout=30)
        page = httpx.get(f"{url}/chat/", cookies={"sessionid": cookie}, timeout=30)
    finally:
        for conn in held:
            pool.putconn(conn)
    assert api.status_code == 503 and int(api.headers["Retry-After"]) > 0
    assert api.headers["Content-Type"] == "application/json"
    assert api.json()["error"]["code"] == "service_busy" and api.json()["request_id"]
    assert page.status_code == 503 and int(page.headers["Retry-After"]) > 0
    assert page.headers["Content-Type"].startswith("text/html") and "busy" in page.text
    # Capacity is back: the same requests work again.
    assert httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {scope_a.api_key}"}).status_code == 200
