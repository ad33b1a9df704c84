"""Row-level security on every table that holds tenant data, installed by migrate (idempotent).

- Tables with a `tenant` foreign key (every TenantModel, and Membership, Subscription): a row is visible and
  writable in its tenant's scope or in the system scope.
- Many-to-many tables between tenant-owned models: a link is visible and writable when both rows it joins are.

The policies read the scope through SECURITY DEFINER functions of the guard (config/dbbackend/guard.py), which
accept it only with a valid signature, so `set_config('app.scope', ...)` from injected SQL widens nothing, and
its event trigger refuses DDL (dropping a policy, NO FORCE ROW LEVEL SECURITY) outside the system scope. Without
a valid scope a tenant table shows zero rows, even to the tables' owner (FORCE). A database without the guard
fails closed: policies cannot be installed and `check --database default` / migrate report how to install it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from accounts.models import Tenant, TenantModel
from accounts.tenancy import system_scope
from config.dbbackend import guard
from config.dbbackend.base import rls_key

POLICY = "tenant_isolation"
# Each function runs once per query, not per row: a scalar subquery becomes an InitPlan.
TENANT_PREDICATE = (
    f"(SELECT {guard.SCHEMA}.is_system()) OR tenant_id = (SELECT {guard.SCHEMA}.tenant_id())"
)


@dataclass(frozen=True)
class Policy:
    table: str
    predicate: str

    @property
    def marker(self) -> str:
        """Stored as the policy's comment, so a migrate with nothing to change takes no table locks."""
        return f"ragdesk rls {hashlib.sha256(self.predicate.encode()).hexdigest()[:16]}"


def _tenant_keyed(model) -> bool:
    try:
        field = model._meta.get_field("tenant")
    except FieldDoesNotExist:
        return False
    return getattr(field, "related_model", None) is Tenant and not field.many_to_many


def _concrete(model) -> bool:
    return model._meta.managed and not model._meta.proxy and not model._meta.abstract


def tenant_tables() -> list[str]:
    return sorted(m._meta.db_table for m in apps.get_models() if issubclass(m, TenantModel) and _concrete(m))


def policies() -> list[Policy]:
    keyed = [m for m in apps.get_models() if _concrete(m) and _tenant_keyed(m)]
    found = [Policy(m._meta.db_table, TENANT_PREDICATE) for m in keyed]
    for model in keyed:
        for m2m in model._meta.local_many_to_many:
            through = m2m.remote_field.through
            if not through._meta.auto_created or m2m.related_model not in keyed:
                continue
            links = [f for f in through._meta.fields if f.is_relation]
            predicate = " AND ".join(
                f"EXISTS (SELECT 1 FROM {f.related_model._meta.db_table} AS p "
                f"WHERE p.{f.target_field.column} = {through._meta.db_table}.{f.column})"
                for f in links
            )
            found.append(Policy(through._meta.db_table, predicate))
    return sorted(found, key=lambda p: p.table)


def _policy_states(connection, cursor):
    """(policy, the table has one, it is current and forced) for each wanted policy whose table exists."""
    wanted = [p for p in policies() if p.table in set(connection.introspection.table_names(cursor))]
    cursor.execute(
        "SELECT c.relname, p.oid IS NOT NULL, obj_description(p.oid, 'pg_policy'), "
        "c.relrowsecurity AND c.relforcerowsecurity "
        "FROM pg_class c LEFT JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = %s "
        "WHERE c.relname = ANY(%s) AND c.relnamespace = 'public'::regnamespace",
        [POLICY, [p.table for p in wanted]],
    )
    found = {table: (exists, comment, forced) for table, exists, comment, forced in cursor.fetchall()}
    for policy in wanted:
        exists, comment, forced = found.get(policy.table, (False, None, False))
        yield policy, exists, comment == policy.marker and forced


def stale_tables(using: str = DEFAULT_DB_ALIAS) -> list[str]:
    connection = connections[using]
    with connection.cursor() as cursor:
        return [policy.table for policy, _exists, current in _policy_states(connection, cursor) if not current]


def install_policies(using: str = DEFAULT_DB_ALIAS, *, only_protected: bool = False) -> int:
    """Create or refresh the policy of each existing table; returns how many changed. `only_protected`: only
    tables that already have one (before migrations run, when other tables may lack their columns yet).
    Runs in the system scope: the guard refuses DDL anywhere else (callers are migrate and flush)."""
    connection = connections[using]
    changed = 0
    with system_scope(), connection.cursor() as cursor:
        for policy, exists, current in _policy_states(connection, cursor):
            if current or (only_protected and not exists):
                continue
            quoted = connection.ops.quote_name(policy.table)
            cursor.execute(f"ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY")
            cursor.execute(f"ALTER TABLE {quoted} FORCE ROW LEVEL SECURITY")
            cursor.execute(f"DROP POLICY IF EXISTS {POLICY} ON {quoted}")
            cursor.execute(
                f"CREATE POLICY {POLICY} ON {quoted} USING ({policy.predicate}) WITH CHECK ({policy.predicate})"
            )
            cursor.execute(f"COMMENT ON POLICY {POLICY} ON {quoted} IS %s", [policy.marker])
            changed += 1
    return changed


def install_policies_after_migrate(sender, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    if sender.name == "accounts":  # post_migrate is sent once per app; once is enough
        install_policies(using)


# ---------------------------------------------------------------- the guard (privileged part)

BYPASSES = "the app connects as a superuser or BYPASSRLS role, which row-level security does not apply to"
HOW_TO_INSTALL = (
    "scripts/postgres_redis.py installs it in its embedded PostgreSQL; elsewhere run `manage.py rls_install` with "
    "DATABASE_ADMIN_URL set to a superuser URL (README: Configuration, Your own PostgreSQL)."
)


def guard_problem(using: str = DEFAULT_DB_ALIAS) -> str | None:
    """Why row-level security is not enforceable on this database, or None when the guard is in place."""
    connection = connections[using]
    with system_scope(), connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        if cursor.fetchone()[0]:
            return BYPASSES
        cursor.execute(
            "SELECT to_regprocedure(%s) IS NOT NULL, EXISTS (SELECT 1 FROM pg_event_trigger "
            "WHERE evtname = %s AND evtenabled <> 'D')",
            [f"{guard.SCHEMA}.is_system()", guard.EVENT_TRIGGER],
        )
        functions, trigger = cursor.fetchone()
        if not (functions and trigger):
            return f"the row-level security guard ({guard.SCHEMA}) is not installed in this database"
        cursor.execute(f"SELECT {guard.SCHEMA}.is_system()")
        if not cursor.fetchone()[0]:
            return "the database's row-level security key differs from DATABASE_RLS_KEY (or SECRET_KEY)"
    return None


def install_guard(admin_url: str, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Install the guard in `using`'s database through a superuser URL (any database on the same server)."""
    params = conninfo_to_dict(admin_url)
    params["dbname"] = connections[using].settings_dict["NAME"]
    with psycopg.connect(make_conninfo(**params), autocommit=True) as conn:
        return guard.install(conn, key=rls_key())


def ensure_guard(using: str = DEFAULT_DB_ALIAS) -> None:
    """Fail closed with instructions when the guard is missing; install it first when DATABASE_ADMIN_URL is set."""
    problem = guard_problem(using)
    if problem and problem != BYPASSES and settings.DATABASE_ADMIN_URL:
        install_guard(settings.DATABASE_ADMIN_URL, using)
        problem = guard_problem(using)
    if problem:
        raise ImproperlyConfigured(f"Row-level security: {problem}. {HOW_TO_INSTALL}")


@checks.register(checks.Tags.database)
def check_guard(app_configs=None, databases=None, **kwargs):
    errors = []
    for alias in databases or []:
        problem = guard_problem(alias)
        if problem:
            errors.append(checks.Error(f"Row-level security: {problem}.", hint=HOW_TO_INSTALL, id="accounts.E010"))
        elif stale := stale_tables(alias):
            errors.append(checks.Warning(
                f"Row-level security: {len(stale)} table(s) lack their current policy ({', '.join(stale[:5])}).",
                hint="Run manage.py migrate.", id="accounts.W011"))
    return errors
