"""Row-level security for every tenant-owned table, installed after each migrate (idempotent).

Policies read two settings the database backend sets per connection from the tenant scope:
`app.tenant_id` (rows of that tenant only) and `app.bypass_rls` (staff tools and maintenance jobs).
With neither set, a tenant-owned table shows zero rows, even to the table's owner (FORCE).
"""

from django.apps import apps
from django.db import connection

POLICY = "tenant_isolation"
_PREDICATE = (
    "current_setting('app.bypass_rls', true) = 'on' "
    "OR tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint"
)


def tenant_tables() -> list[str]:
    from accounts.models import TenantModel

    return sorted(
        m._meta.db_table
        for m in apps.get_models()
        if issubclass(m, TenantModel) and not m._meta.proxy and m._meta.managed
    )


def install_policies(tables: list[str] | None = None) -> None:
    existing = set(connection.introspection.table_names())
    with connection.cursor() as cursor:
        for table in tables or tenant_tables():
            if table not in existing:
                continue
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY")
            cursor.execute(f"ALTER TABLE {quoted} FORCE ROW LEVEL SECURITY")
            cursor.execute(f"DROP POLICY IF EXISTS {POLICY} ON {quoted}")
            cursor.execute(f"CREATE POLICY {POLICY} ON {quoted} USING ({_PREDICATE}) WITH CHECK ({_PREDICATE})")


def install_policies_after_migrate(sender, **kwargs) -> None:
    install_policies()
