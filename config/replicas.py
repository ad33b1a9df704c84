"""Read replicas: which database a tenant's read-only selector may read from.

Each of DATABASE_REPLICA_URLS is a database alias `replica_<n>` (config/settings/base.py) with the primary's
backend, so a replica connection sends the same signed tenant scope and row-level security holds there too:
the guard, its key and the policies are replicated with everything else. Nothing is routed globally; a read
path opts in with `read_alias(tenant=...)` (today: search), every other query stays on the primary.

A replica is used only when it has the tenant's last write that such reads see (read your writes): code that
changes what a tenant's searches find (a document indexed or removed, a KB's settings) calls `note_write`, which
on commit records the primary's WAL position for the tenant in Redis, and a replica that has not replayed that
far is passed over. Tenants see only their own rows, so this covers everything their searches can see. A
replica must also answer and lag at most DATABASE_REPLICA_MAX_LAG_SECONDS; otherwise the primary answers. A
replica that fails to answer is left alone for DOWN_SECONDS. No replicas configured: nothing here runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

log = logging.getLogger(__name__)

DOWN_SECONDS = 10.0
# Far longer than any lag a replica is used with: past it, the lag bound alone keeps reads fresh.
WRITE_MARK_TTL_SECONDS = 24 * 3600

# Standby state in one round trip: whether it is one, how far it has replayed (bytes of WAL), and its lag in
# seconds, 0 when it has replayed all it received (an idle primary sends nothing, and that is not lag).
_STATE_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0', "
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END"
)
# The insert position, not pg_current_wal_lsn(): with synchronous_commit off the commit record may not be
# written out yet, and a replica must have replayed past it.
_WRITTEN_SQL = "SELECT pg_current_wal_insert_lsn() - '0/0'"
# Keep the highest position: writers of one tenant commit concurrently and record in any order.
_RECORD_MAX = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""

_down_until: dict[str, float] = {}


def replica_aliases() -> list[str]:
    return [f"replica_{index}" for index in range(len(settings.DATABASE_REPLICA_URLS))]


@functools.lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _mark_key(tenant_id: int) -> str:
    # The tenant ids of one database: another deployment (or test database) on the same Redis has its own.
    return f"replicas:written:{connections[DEFAULT_DB_ALIAS].settings_dict['NAME']}:{tenant_id}"


def note_write(*, tenant_id: int) -> None:
    """Call inside the transaction of a write that changes what the tenant's searches find (or right after it
    in autocommit): once it commits, the tenant's reads skip replicas that have not replayed it."""
    if settings.DATABASE_REPLICA_URLS:
        transaction.on_commit(functools.partial(_record_write, tenant_id))


def _record_write(tenant_id: int) -> None:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(_WRITTEN_SQL)
            position = int(cursor.fetchone()[0])
        _redis(settings.REDIS_URL).eval(_RECORD_MAX, 1, _mark_key(tenant_id), position, WRITE_MARK_TTL_SECONDS)
    except (DatabaseError, redis.RedisError) as exc:
        log.warning("read replicas: tenant %s's write not recorded (%r); replicas may miss it for up to "
                    "DATABASE_REPLICA_MAX_LAG_SECONDS", tenant_id, exc)


def read_alias(*, tenant) -> str:
    """The alias a read-only selector of `tenant` reads from: a replica that is up, lags at most
    DATABASE_REPLICA_MAX_LAG_SECONDS and has replayed the tenant's last noted write; else the primary. Also the
    primary inside a transaction, whose uncommitted rows no replica has."""
    if not settings.DATABASE_REPLICA_URLS or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    try:
        written = int(_redis(settings.REDIS_URL).get(_mark_key(tenant.pk)) or 0)
    except redis.RedisError as exc:  # the tenant's last write is unknown: only the primary surely has it
        log.warning("read replicas: write marks unavailable (%r); reading from the primary", exc)
        return DEFAULT_DB_ALIAS
    aliases = replica_aliases()
    first = random.randrange(len(aliases))  # spread the load; the others are tried when one is unfit
    for alias in aliases[first:] + aliases[:first]:
        if _fit(alias, written):
            return alias
    return DEFAULT_DB_ALIAS


def _fit(alias: str, written: int) -> bool:
    if _down_until.get(alias, 0.0) > time.monotonic():
        return False
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(_STATE_SQL)
            standby, replayed, lag = cursor.fetchone()
    except DatabaseError as exc:
        mark_down(alias, exc)
        return False
    if not standby:  # promoted, or the primary itself: it would never see another write
        mark_down(alias, "not a standby (pg_is_in_recovery() is false)")
        return False
    return (replayed is not None and lag is not None and int(replayed) >= written
            and float(lag) <= settings.DATABASE_REPLICA_MAX_LAG_SECONDS)


def mark_down(alias: str, reason) -> None:
    """Leave `alias` alone for DOWN_SECONDS, closing this thread's connection to it."""
    log.warning("read replica %s unavailable for %ss: %s", alias, DOWN_SECONDS, reason)
    _down_until[alias] = time.monotonic() + DOWN_SECONDS
    with contextlib.suppress(DatabaseError):  # already broken: nothing to give back
        connections[alias].close()
