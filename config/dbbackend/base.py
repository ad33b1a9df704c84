"""PostgreSQL backend that keeps the row-level-security scope in step with the tenant scope.

Before a query runs, the connection's `app.scope` ('system', 'tenant:<id>' or '') is made to match the current
scope (accounts.tenancy), together with `app.scope_sig`, its HMAC under the key only the app process and the
database's guard know (config/dbbackend/guard.py). Policies trust a scope only with a valid signature, so SQL
that calls set_config itself cannot widen what it sees.

The last scope sent is cached on the connection and forgotten on any rollback, because Postgres undoes a SET
made inside a transaction that rolls back.
"""

from functools import lru_cache

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base

from accounts.tenancy import rls_scope
from config.dbbackend import guard

_SYNC_SQL = "SELECT set_config('app.scope', %s, false), set_config('app.scope_sig', %s, false)"


@lru_cache(maxsize=1)
def _key(configured: str, secret_key: str) -> bytes:
    return guard.key_bytes(configured, secret_key)


@lru_cache(maxsize=4096)
def _signed(key: bytes, scope: str) -> str:
    return guard.sign(key, scope)


def rls_key() -> bytes:
    return _key(settings.DATABASE_RLS_KEY, settings.SECRET_KEY)


def scope_signature(scope: str) -> str:
    return _signed(rls_key(), scope)


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rls_sent = None

    def get_new_connection(self, conn_params):
        self._rls_sent = None
        return super().get_new_connection(conn_params)

    def create_cursor(self, name=None):
        cursor = super().create_cursor(name)
        self.sync_rls_settings()
        return cursor

    def sync_rls_settings(self) -> None:
        scope = rls_scope()
        wanted = (scope, scope_signature(scope))
        if wanted != self._rls_sent and self.connection is not None:
            # Server-side binding: the signature travels as a parameter, so pg_stat_activity (which the app role
            # can read for its other sessions) shows `$2`, never the signature itself.
            with psycopg.Cursor(self.connection) as raw:
                raw.execute(_SYNC_SQL, wanted)
            self._rls_sent = wanted

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._rls_sent = None

    def _savepoint_rollback(self, sid):
        # Forget the cache only after the rollback: syncing inside the aborted transaction would fail.
        try:
            return super()._savepoint_rollback(sid)
        finally:
            self._rls_sent = None

    def _close(self):
        self._rls_sent = None
        return super()._close()
