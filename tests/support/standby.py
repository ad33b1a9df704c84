"""A streaming standby of the embedded PostgreSQL, for the read-replica tests (tests/test_replicas.py).

`Standby.create()` copies the running server with pg_basebackup (-R writes standby.signal and primary_conninfo)
into a directory of its own next to the server's data, as the server's unprivileged user and with its binaries
(scripts/postgres_redis.py), and starts the copy on a free port as a hot standby. `remove()` stops it and
deletes the copy. The copy is the whole cluster, every database in it: about a minute for a few GB.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import tempfile
from pathlib import Path

import psycopg

from tests.support.waiting import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
# A hot standby refuses to start with any of these lower than its primary's.
PRIMARY_MINIMUMS = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
                    "max_locks_per_transaction")
START_TIMEOUT_S = 600  # replaying what the primary wrote during the copy


class StandbyUnavailable(RuntimeError):
    """No standby can be made here (not the embedded PostgreSQL, no binaries, the copy or start failed)."""


def _embedded():
    """scripts/postgres_redis.py, loaded by path: scripts/ is no package."""
    spec = importlib.util.spec_from_file_location("ragdesk_postgres_redis", ROOT / "scripts" / "postgres_redis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _superuser(host: str, port: int) -> psycopg.Connection:
    return psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True,
                           connect_timeout=5)


class Standby:
    def __init__(self, *, embedded, bindir: Path, data: Path, options: str, port: int):
        self._embedded, self.bindir, self.data, self.options, self.port = embedded, bindir, data, options, port

    @classmethod
    def create(cls, *, primary_host: str, primary_port: int) -> Standby:
        try:
            embedded = _embedded()
            with _superuser(primary_host, primary_port) as conn:
                minimums = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in PRIMARY_MINIMUMS}
            home = embedded.pg_home()
            bindir = embedded.usable_bin_dir(home)
        except (OSError, SystemExit, psycopg.Error) as exc:
            raise StandbyUnavailable(f"not the embedded PostgreSQL, or its superuser is out of reach: {exc}") from exc
        data = Path(tempfile.mkdtemp(prefix="pg-standby-", dir=home))
        if embedded.is_root():
            shutil.chown(data, embedded.PG_USER, embedded.PG_USER)
        data.chmod(0o700)
        port = free_port()
        options = (f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c shared_buffers=32MB "
                   + " ".join(f"-c {name}={value}" for name, value in minimums.items()))
        standby = cls(embedded=embedded, bindir=bindir, data=data, options=options, port=port)
        try:
            standby._run("pg_basebackup", "-D", str(data), "-h", primary_host, "-p", str(primary_port),
                         "-U", "postgres", "-X", "stream", "-R", "--checkpoint=fast", "--no-sync")
            standby.start()
            standby.wait_caught_up(primary_host=primary_host, primary_port=primary_port)
        except (StandbyUnavailable, AssertionError) as exc:  # AssertionError: it never caught up
            standby.remove()
            raise StandbyUnavailable(str(exc)) from exc
        return standby

    def _run(self, program: str, *args: str) -> None:
        done = self._embedded.as_pg_user([str(self.bindir / program), *args], capture_output=True, text=True)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise StandbyUnavailable(f"{program} failed: {lines[-1] if lines else done.returncode}")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "standby.log"), "-o", self.options,
                  "-w", "-t", str(START_TIMEOUT_S), "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(StandbyUnavailable):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.data, ignore_errors=True)

    def wait_caught_up(self, *, primary_host: str, primary_port: int, timeout: float = START_TIMEOUT_S) -> None:
        """Until the standby has replayed what the primary had written when this was called: it starts with
        what was written during the copy still to apply."""
        with _superuser(primary_host, primary_port) as primary:
            target = primary.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        with self.superuser() as conn:
            wait_for(lambda: conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]).fetchone()[0],
                     timeout=timeout, interval=0.2, what=f"the standby to replay up to {target}")

    def url(self, *, user: str, dbname: str) -> str:
        return f"postgres://{user}@127.0.0.1:{self.port}/{dbname}"

    def superuser(self) -> psycopg.Connection:
        return _superuser("127.0.0.1", self.port)

    @contextlib.contextmanager
    def replay_paused(self):
        """WAL keeps arriving but is not applied until the block ends."""
        with self.superuser() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            wait_for(lambda: conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused",
                     timeout=30, what="replay to pause")
            try:
                yield
            finally:
                conn.execute("SELECT pg_wal_replay_resume()")

