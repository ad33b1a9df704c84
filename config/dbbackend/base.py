"""PostgreSQL backend that keeps row-level-security settings in step with the tenant scope.

Before a query runs, the connection's `app.tenant_id` / `app.bypass_rls` settings are made to match the
current scope (accounts.tenancy). The last values sent are cached on the connection and forgotten on any
rollback, because Postgres undoes a SET made inside a transaction that rolls back.
"""

from django.db.backends.postgresql import base

from accounts.tenancy import rls_settings

_SYNC_SQL = "SELECT set_config('app.tenant_id', %s, false), set_config('app.bypass_rls', %s, false)"


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
        wanted = rls_settings()
        if wanted != self._rls_sent and self.connection is not None:
            with self.connection.cursor() as raw:
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
