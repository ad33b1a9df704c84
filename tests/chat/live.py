"""A live ragdesk for tests that need real streaming: uvicorn (ASGI) and a Celery worker, both in threads of
the test process, so they use the test database and see in-process test doubles (static LLM pools).

Use with transactional tests (the server's and the worker's connections only see committed rows).
"""

from __future__ import annotations

import contextlib
import threading
import time

from django.db import connection


@contextlib.contextmanager
def celery_worker(queues=("chat",)):
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    app.conf.task_always_eager = False
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, queues=list(queues),
                      shutdown_timeout=30, loglevel="WARNING"):
        yield


@contextlib.contextmanager
def asgi_server():
    import uvicorn
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    from config.asgi import application

    # Static files straight from the apps' folders (no collectstatic), as the browser needs CSS and JS.
    config = uvicorn.Config(ASGIStaticFilesHandler(application), host="127.0.0.1", port=0, lifespan="off",
                            log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def backend_pids() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return {row[0] for row in cursor.fetchall()}


def close_new_connections(before: set[int]) -> None:
    """End the database sessions the server and worker threads opened (the test's own ones, opened before,
    stay), so the test database can be flushed and dropped."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND NOT pid = ANY(%s) "
            "AND backend_type = 'client backend'",  # an autovacuum worker may be there too; it isn't ours
            [list(before)],
        )


@contextlib.contextmanager
def live_stack(queues=("chat",)):
    from django.conf import settings

    old_age = settings.DATABASES["default"]["CONN_MAX_AGE"]
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0  # every request and task closes its connection
    before = backend_pids()
    try:
        with celery_worker(queues), asgi_server() as url:
            yield url
    finally:
        settings.DATABASES["default"]["CONN_MAX_AGE"] = old_age
        close_new_connections(before)
