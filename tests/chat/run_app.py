"""The processes scripts/run-app starts (`make run`), read from the script itself, so tests run the default
configuration rather than a copy of it that could drift: each background line's environment and command, with
`${VAR:-default}` taken at its default."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from tests.support.waiting import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


@dataclass
class Process:
    name: str  # "web", or the Celery worker's name without "-$PORT@%h" ("worker" when it has none)
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def queues(self) -> set[str]:
        return set(self.argv[self.argv.index("-Q") + 1].split(",")) if "-Q" in self.argv else set()

    def option(self, flag: str, default: str | None = None) -> str | None:
        return self.argv[self.argv.index(flag) + 1] if flag in self.argv else default


def processes(port: int = 8000, host: str = "127.0.0.1") -> list[Process]:
    """The web server and the Celery workers of scripts/run-app, runnable with this interpreter."""
    found = []
    for line in (ROOT / "scripts" / "run-app").read_text().splitlines():
        line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        command = re.split(r"\s&(\s|$)", line, maxsplit=1)[0]
        if not re.search(r"\b(uvicorn|celery -A config worker)\b", command):
            continue
        command = _DEFAULT.sub(lambda m: {"PORT": str(port), "HOST": host}.get(m.group(1), m.group(2)), command)
        command = command.replace("$PORT", str(port))
        words = shlex.split(command)
        env = {}
        while words and re.fullmatch(r"\w+=.*", words[0]):
            name, _sep, value = words.pop(0).partition("=")
            env[name] = value
        niced = words[:3] if words[:2] == ["nice", "-n"] else []  # a background worker runs niced
        program, *args = words[len(niced):]
        argv = [*niced, sys.executable, "-m", program, *args]
        name = "web" if program == "uvicorn" else (args[args.index("-n") + 1].split("-", 1)[0] if "-n" in args
                                                    else "worker")
        found.append(Process(name=name, argv=argv, env=env))
    return found


def database_url() -> str:
    """The test database, for processes of their own (use with transactional tests: they see committed rows)."""
    from django.db import connection

    s = connection.settings_dict
    auth = quote(s["USER"] or "") + (":" + quote(s["PASSWORD"]) if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Stack:
    """scripts/run-app's web server and workers on the test database and the given Redis, each process in a
    group of its own (logs in `logdir`)."""

    def __init__(self, logdir: Path, *, redis_url: str, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logdir, self.procs = logdir, {}
        base = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": database_url(),
                "REDIS_URL": redis_url, "TEST_REDIS_DB": urlsplit_db(redis_url), "CELERY_BROKER_URL": redis_url,
                "PYTHONUNBUFFERED": "1", "HTTPS_ONLY": "false", **{k: str(v) for k, v in env.items()}}
        self.layout = processes(self.port)
        try:
            for proc in self.layout:
                log = (logdir / f"{proc.name}.log").open("wb")
                self.procs[proc.name] = (subprocess.Popen(proc.argv, cwd=ROOT, env={**base, **proc.env}, stdout=log,
                                                          stderr=subprocess.STDOUT, start_new_session=True), log)
            for proc in self.layout:
                if proc.name != "web":
                    wait_for(lambda n=proc.name: b" ready." in self.log(n), timeout=90, interval=0.2,
                             what=f"the {proc.name} worker")
            wait_for(self._web_up, timeout=60, interval=0.2, what="the web server")
        except BaseException:
            self.stop()
            raise

    def log(self, name) -> bytes:
        return (self.logdir / f"{name}.log").read_bytes()

    def _web_up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self):
        for proc, _log in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            log.close()


def urlsplit_db(redis_url: str) -> str:
    """The database number of a Redis URL (the test settings would otherwise move it to TEST_REDIS_DB)."""
    path = redis_url.rsplit("/", 1)[-1]
    return path if path.isdigit() else "0"


class RedisServer:
    """A redis-server of the test's own, without persistence: a restart loses every key."""

    def __init__(self, workdir: Path):
        self.port, self.workdir, self.proc = free_port(), workdir, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        binary = shutil.which("redis-server")
        if binary is None:
            import pytest

            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout=10, what="redis-server")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
