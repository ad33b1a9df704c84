"""Point a benchmark at a database of its own (created on first use) on the server in DATABASE_URL, so a
benchmark's data never mixes with the app's, and set the environment Django reads before it is set up."""

import os
from urllib.parse import urlparse, urlunparse

import psycopg

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "testserver")  # benches serve and call on loopback


def bench_database_name(name: str, *, smoke: bool = False) -> str:
    """A --smoke run never touches the full-size data: `<name>_smoke`, plus BENCH_SMOKE_SUFFIX when set (the
    test suite gives each run its own)."""
    return f"{name}_smoke{os.environ.get('BENCH_SMOKE_SUFFIX', '')}" if smoke else name


def use_bench_database(name: str, *, smoke: bool = False) -> str:
    """Create (if needed) and select the benchmark's database; returns its name."""
    name = bench_database_name(name, smoke=smoke)
    url = urlparse(os.environ.get("DATABASE_URL", "postgres://ragdesk@127.0.0.1:54329/ragdesk"))
    admin = urlunparse(url._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = urlunparse(url._replace(path=f"/{name}"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("HTTPS_ONLY", "false")  # benches talk plain HTTP to loopback servers
    os.environ.setdefault("SECRET_KEY", "bench-only")
    hosts = [h for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    os.environ["ALLOWED_HOSTS"] = ",".join(hosts + [h for h in LOOPBACK_HOSTS if h not in hosts])
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("TQDM_DISABLE", "1")
    return name
