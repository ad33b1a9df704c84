"""Keeps the offline demo model server running for `manage.py start_local_llm`.

The server is started, watched, and restarted when it dies, with exponential backoff (1 s, 2 s, 4 s ... 30 s;
the count starts again once a server has run for a minute). While it is down the runtime record in Redis says so
(state "down"), and the gateway answers "the local model server is not responding" instead of "no model pool
named 'local'" (llm/registry.py). A restart takes the same port when it is free, else another; the record then
carries the new URL, and clients are keyed by URL (llm/providers/openai_compat.py), so answers follow it.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable

from llm import conf, localserver
from llm.conf import Runtime

logger = logging.getLogger(__name__)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class LocalServerSupervisor:
    """launch(port) starts the server process listening on 127.0.0.1:port; its OpenAI API is at /v1."""

    def __init__(self, *, launch: Callable[[int], subprocess.Popen], port: int, detail: Callable[[int | None], str],
                 ready_timeout_s: float = 90.0, backoff_base_s: float = 1.0, backoff_max_s: float = 30.0,
                 stable_after_s: float = 60.0, refresh_s: float = 20.0, runtime_ttl_s: int = 60,
                 on_up: Callable[[LocalServerSupervisor], None] | None = None):
        self.launch = launch
        self.on_up = on_up
        self.port = port
        self.detail = detail
        self.ready_timeout_s = ready_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.refresh_s = refresh_s
        self.runtime_ttl_s = runtime_ttl_s
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.restarts = 0
        self.record: Runtime | None = None

    def stop(self) -> None:
        self.stopping.set()

    # --- one server ---

    def _start(self) -> bool:
        """Start a server and wait until it answers; False (and nothing left running) when it does not."""
        port = self.port if localserver.port_free(self.port) else localserver.free_port()
        base_url = f"http://127.0.0.1:{port}/v1"
        proc = self.launch(port)
        if not localserver.wait_ready(base_url, timeout_s=self.ready_timeout_s,
                                      alive=lambda: proc.poll() is None and not self.stopping.is_set()):
            stop_process(proc)
            return False
        self.proc, self.base_url = proc, base_url
        # What it announces (/props) is what it runs with: n_ctx may be capped at the model's trained context.
        n_ctx = (localserver.read_props(base_url) or {}).get("n_ctx")
        self.record = Runtime(source="llamacpp", base_url=base_url, model=conf.LOCAL_MODEL, detail=self.detail(n_ctx))
        conf.runtime_write(self.record, ttl_s=self.runtime_ttl_s)
        if self.on_up is not None:
            self.on_up(self)
        return True

    def _down(self, why: str) -> None:
        # Outlives a slow restart (backoff plus start-up), so "down" never turns into "not configured" meanwhile.
        conf.runtime_write(Runtime(source="llamacpp", base_url=self.base_url, model=conf.LOCAL_MODEL, detail=why,
                                   state="down"), ttl_s=int(self.runtime_ttl_s + self.ready_timeout_s))

    def _watch(self, deadline: float | None) -> None:
        """Until the server exits, a stop is asked for, or the deadline; keeps the runtime record fresh."""
        last_refresh = time.monotonic()
        while not self.stopping.is_set() and self.proc.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return
            self.stopping.wait(0.5)
            if time.monotonic() - last_refresh >= self.refresh_s:
                conf.runtime_write(self.record, ttl_s=self.runtime_ttl_s)
                last_refresh = time.monotonic()

    # --- the loop ---

    def run(self, *, exit_after: float | None = None) -> bool:
        """Run until stop() (or exit_after seconds); False when the first start failed (nothing was up)."""
        deadline = time.monotonic() + exit_after if exit_after is not None else None
        if not self._start():
            return False
        failures = 0
        try:
            while not self.stopping.is_set():
                ran_from = time.monotonic()
                self._watch(deadline)
                if self.stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    break
                why = f"exited with code {self.proc.returncode}"
                if time.monotonic() - ran_from >= self.stable_after_s:
                    failures = 0
                while not self.stopping.is_set():
                    delay = min(self.backoff_base_s * 2 ** failures, self.backoff_max_s)
                    failures += 1
                    logger.warning("LLM: the local model server %s; restarting it in %gs", why, delay)
                    self._down(f"{why}; restarting in {delay:g}s")
                    if self.stopping.wait(delay):
                        break
                    self.restarts += 1
                    if self._start():
                        break
                    why = "did not start again"
        finally:
            if self.proc is not None:
                stop_process(self.proc)
            with contextlib.suppress(Exception):  # Redis may already be gone at shutdown
                conf.runtime_clear()
        return True
