import pytest
from django.db import connection

from accounts.models import ApiKey
from accounts.rls import tenant_tables
from accounts.tenancy import TenantScopeMissing, no_scope, system_scope, tenant_scope

pytestmark = pytest.mark.django_db


def test_manager_fails_closed_without_a_tenant(tenant_a):
    with no_scope(), pytest.raises(TenantScopeMissing):
        list(ApiKey.objects.all())


def test_manager_shows_only_the_scoped_tenant(tenant_a, tenant_b):
    with tenant_scope(tenant_a.tenant):
        assert {k.tenant_id for k in ApiKey.objects.all()} == {tenant_a.tenant.pk}
    with system_scope():
        assert {k.tenant_id for k in ApiKey.objects.all()} == {tenant_a.tenant.pk, tenant_b.tenant.pk}


def test_every_tenant_table_has_forced_rls():
    tables = tenant_tables()
    assert "accounts_apikey" in tables
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relrowsecurity AND relforcerowsecurity",
            [tables],
        )
        protected = {row[0] for row in cursor.fetchall()}
    assert protected == set(tables)


def test_every_table_holding_tenant_data_has_forced_rls():
    """Found from the catalog, not the models: every table with a tenant_id column, and every table with a foreign
    key into one (many-to-many links, at any depth), has forced row-level security and a policy."""
    with connection.cursor() as cursor:
        cursor.execute("""
            WITH RECURSIVE tenant_data(oid) AS (
                SELECT attrelid FROM pg_attribute WHERE attname = 'tenant_id' AND attnum > 0 AND NOT attisdropped
                UNION
                SELECT k.conrelid FROM pg_constraint k JOIN tenant_data t ON k.confrelid = t.oid WHERE k.contype = 'f'
            )
            SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity
                   AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
            FROM pg_class c JOIN tenant_data USING (oid)
            WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
        """)
        protected = dict(cursor.fetchall())
    assert {"accounts_membership", "billing_subscription", "chat_assistant_knowledge_bases",
            "search_evalquestion_expected_documents", *tenant_tables()} <= set(protected)
    assert [table for table, ok in protected.items() if not ok] == []


def test_app_role_is_not_a_superuser():
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (False, False)


def test_raw_sql_without_the_setting_sees_zero_rows(tenant_a, tenant_b):
    """RLS holds even when application code forgets the scope and bypasses the ORM."""
    with no_scope(), connection.cursor() as cursor:  # the backend sends an empty scope here
        cursor.execute("SELECT count(*) FROM accounts_apikey")
        assert cursor.fetchone()[0] == 0
        # Even a hand-written filter for another tenant finds nothing.
        cursor.execute("SELECT count(*) FROM accounts_apikey WHERE tenant_id = %s", [tenant_a.tenant.pk])
        assert cursor.fetchone()[0] == 0
    with tenant_scope(tenant_b.tenant), connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tenant_id FROM accounts_apikey")
        assert [r[0] for r in cursor.fetchall()] == [tenant_b.tenant.pk]


def test_rls_rejects_writes_into_another_tenant(tenant_a, tenant_b):
    from django.db import DatabaseError, transaction

    with (
        tenant_scope(tenant_b.tenant),
        pytest.raises(DatabaseError),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE accounts_apikey SET name = 'owned' WHERE tenant_id = %s RETURNING id",
            [tenant_a.tenant.pk],
        )
        assert cursor.fetchall() == []  # invisible, so nothing to update
        cursor.execute(
            "INSERT INTO accounts_apikey (tenant_id, name, prefix, key_hash, scopes, created_at) "
            "VALUES (%s, 'x', 'zzz', 'h', '[]', now())",
            [tenant_a.tenant.pk],
        )


def test_scope_setting_survives_a_rollback(tenant_a):
    """Postgres undoes a SET inside a rolled-back transaction; the backend must notice and set it again."""
    from django.db import transaction

    with tenant_scope(tenant_a.tenant):
        try:
            with transaction.atomic():
                assert ApiKey.objects.count() == 1
                raise RuntimeError
        except RuntimeError:
            pass
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM accounts_apikey")
            assert cursor.fetchone()[0] == 1


def test_caught_error_inside_a_savepoint_leaves_the_transaction_usable(tenant_a):
    from django.db import IntegrityError, transaction

    from accounts.models import Tenant

    with tenant_scope(tenant_a.tenant), transaction.atomic():
        try:
            with transaction.atomic():
                Tenant.objects.create(name="dup", slug=tenant_a.tenant.slug)  # unique slug clash
        except IntegrityError:
            pass
        assert ApiKey.objects.count() == 1  # the outer transaction still works, scope still applied
