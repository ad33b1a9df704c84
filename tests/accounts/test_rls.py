"""Row-level security holds against SQL the app role runs itself (what an SQL injection could run).

Each attack runs on the app's own connection, inside tenant A's scope, after the backend has sent that scope:
it may change any setting, try any role, try DDL; tenant B's rows must stay invisible.
"""

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

from accounts.models import Membership
from accounts.selectors import membership_for_session
from accounts.tenancy import no_scope, system_scope, tenant_scope
from billing.services import subscription_set
from chat.models import Assistant
from config.dbbackend import guard
from knowledge.search.models import EvalQuestion
from tests.factories.billing import PlanFactory
from tests.factories.knowledge import make_document, make_kb

pytestmark = pytest.mark.django_db

# The old bypass switch and a guessed token: they must change nothing.
FORGED_SETTINGS = [
    "SELECT set_config('app.bypass_rls', 'on', false)",
    "SELECT set_config('app.system_token', 'not-the-token', false)",
]


def _rows(sql, *attacks):
    """Run `attacks` then `sql` on the app's connection, in one cursor (the backend syncs only before it)."""
    with connection.cursor() as cursor:
        for attack in attacks:
            cursor.execute(attack)
        cursor.execute(sql)
        return cursor.fetchall()


def _tenants_seen(table, *attacks):
    return {row[0] for row in _rows(f"SELECT DISTINCT tenant_id FROM {table}", *attacks)}


@pytest.fixture
def two_tenants(tenant_a, tenant_b):
    """Rows in every newly covered table for both tenants: memberships (fixture), subscriptions, m2m links."""
    links = {}
    for team in (tenant_a, tenant_b):
        subscription_set(tenant=team.tenant, plan=PlanFactory())
        with tenant_scope(team.tenant):
            kb = make_kb(team.tenant)
            assistant = Assistant.objects.create(tenant=team.tenant, name="support")
            assistant.knowledge_bases.add(kb)
            question = EvalQuestion.objects.create(tenant=team.tenant, kb=kb, text="q?")
            question.expected_documents.add(make_document(team.tenant, kb))
            links[team.tenant.pk] = {"assistant": assistant.pk, "question": question.pk}
    return tenant_a, tenant_b, links


TENANT_TABLES = ["accounts_apikey", "accounts_membership", "billing_subscription"]


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_forged_settings_do_not_widen_a_tenant_scope(two_tenants, table):
    a, b, _links = two_tenants
    with system_scope():
        assert _tenants_seen(table) == {a.tenant.pk, b.tenant.pk}
    with tenant_scope(a.tenant):
        assert _tenants_seen(table, *FORGED_SETTINGS) == {a.tenant.pk}


@pytest.mark.parametrize("table", TENANT_TABLES)
@pytest.mark.parametrize("claim", ["system", "tenant:{b}"])
def test_a_scope_claimed_without_its_signature_shows_nothing(two_tenants, table, claim):
    """Claiming the system scope or tenant B's, with tenant A's signature or a made-up one: zero rows."""
    a, b, _links = two_tenants
    scope = claim.format(b=b.tenant.pk)
    claims = [
        f"SELECT set_config('app.scope', '{scope}', false), set_config('app.tenant_id', '{b.tenant.pk}', false)",
        f"SELECT set_config('app.scope_sig', '{guard.sign(b'a guessed key', scope)}', false)",
    ]
    with tenant_scope(a.tenant):
        assert _tenants_seen(table, claims[0]) == set()
        assert _tenants_seen(table, *claims) == set()


def test_injected_sql_cannot_join_another_tenant(two_tenants):
    """A membership row written into tenant B from tenant A's scope would make A's user an owner of B."""
    a, b, _links = two_tenants
    insert = ("INSERT INTO accounts_membership (user_id, tenant_id, role, created_at) "
              f"VALUES ({a.member.pk}, {b.tenant.pk}, 'owner', now())")
    with tenant_scope(a.tenant), pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
        _rows("SELECT 1", *FORGED_SETTINGS, insert)
    with system_scope():
        assert not Membership.objects.filter(user=a.member, tenant=b.tenant).exists()


@pytest.mark.parametrize(
    ("table", "column", "kind"),
    [("chat_assistant_knowledge_bases", "assistant_id", "assistant"),
     ("search_evalquestion_expected_documents", "evalquestion_id", "question")],
)
def test_many_to_many_links_follow_their_rows(two_tenants, table, column, kind):
    a, b, links = two_tenants
    with system_scope():
        assert {r[0] for r in _rows(f"SELECT {column} FROM {table}")} == {links[a.tenant.pk][kind],
                                                                           links[b.tenant.pk][kind]}
    with tenant_scope(a.tenant):
        assert {r[0] for r in _rows(f"SELECT {column} FROM {table}", *FORGED_SETTINGS)} == {links[a.tenant.pk][kind]}
    with no_scope():
        assert _rows(f"SELECT {column} FROM {table}") == []


def test_no_role_the_app_can_switch_to_sees_more(two_tenants):
    a, _b, _links = two_tenants
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolname FROM pg_roles WHERE rolname <> current_user ORDER BY 1")
        roles = [r[0] for r in cursor.fetchall()]
    assert guard.ROLE in roles and "postgres" in roles
    switched = []
    with tenant_scope(a.tenant):
        for role in roles:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(f'SET ROLE "{role}"')
                    switched.append(role)
                    for attack in FORGED_SETTINGS:
                        cursor.execute(attack)
                    cursor.execute("SELECT DISTINCT tenant_id FROM accounts_apikey")
                    assert {r[0] for r in cursor.fetchall()} <= {a.tenant.pk}
                    cursor.execute("RESET ROLE")
            except DatabaseError:
                pass  # not a member: refused, as it should be
    assert guard.ROLE not in switched and "postgres" not in switched


GUARDED = [
    "ALTER TABLE accounts_apikey NO FORCE ROW LEVEL SECURITY",
    "ALTER TABLE accounts_apikey DISABLE ROW LEVEL SECURITY",
    "DROP POLICY tenant_isolation ON accounts_apikey",
    "CREATE POLICY open_door ON accounts_apikey USING (true)",
    "ALTER TABLE accounts_membership RENAME TO accounts_membership_old",
    "CREATE TABLE loot AS SELECT 1 AS x",
    "CREATE FUNCTION public.copy_rows() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
    "CREATE OR REPLACE FUNCTION app_private.is_system() RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    "SELECT * FROM app_private.scope_key",
    "UPDATE app_private.scope_key SET ipad = opad",
    "ALTER EVENT TRIGGER ragdesk_ddl_guard DISABLE",
    "DROP SCHEMA app_private CASCADE",
]


@pytest.mark.parametrize("statement", GUARDED)
def test_the_app_role_cannot_switch_rls_off(two_tenants, statement):
    a, _b, _links = two_tenants
    with tenant_scope(a.tenant):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
        assert _tenants_seen("accounts_apikey", *FORGED_SETTINGS) == {a.tenant.pk}


def test_schema_changes_run_in_the_system_scope():
    with system_scope(), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE TABLE scratch_rls (id int)")  # what migrate does; rolled back with the test
    with (
        no_scope(),
        pytest.raises(DatabaseError, match="refused outside the system scope"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("CREATE TABLE scratch_rls_2 (id int)")


def test_the_signature_never_shows_in_pg_stat_activity(tenant_a):
    """The app role can read the query text of its other sessions; the signature must not be in it."""
    from config.dbbackend.base import scope_signature

    scope = f"tenant:{tenant_a.tenant.pk}"
    with tenant_scope(tenant_a.tenant):
        connection.ensure_connection()
        connection._rls_sent = None
        connection.sync_rls_settings()  # the last statement of this session is now the sync itself
        pid = connection.connection.info.backend_pid
        params = connection.get_connection_params()
        with psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}) as other:
            query = other.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]
    assert "app.scope_sig" in query
    assert scope_signature(scope) not in query


def test_a_wrong_key_fails_closed(tenant_a, settings):
    from django.core.exceptions import ImproperlyConfigured

    from accounts import rls

    assert rls.guard_problem() is None
    settings.DATABASE_RLS_KEY = "not-the-installed-key"
    settings.DATABASE_ADMIN_URL = ""
    assert "differs" in rls.guard_problem()
    with system_scope():
        assert _rows("SELECT count(*) FROM accounts_apikey") == [(0,)]  # closed, not open
    assert [e.id for e in rls.check_guard(databases=["default"])] == ["accounts.E010"]
    with pytest.raises(ImproperlyConfigured, match="rls_install"):
        rls.ensure_guard()


def test_membership_lookups_before_a_tenant_is_in_scope_still_work(tenant_a, tenant_b):
    """Sign-in and the tenant switcher read a user's memberships across tenants through the ORM."""
    user = tenant_a.member
    Membership.objects.create(user=user, tenant=tenant_b.tenant)  # no scope: the ORM writes in the system scope
    with no_scope():
        assert membership_for_session(user=user, tenant_id=tenant_b.tenant.pk).tenant == tenant_b.tenant
    with tenant_scope(tenant_a.tenant):
        assert {m.tenant_id for m in user.memberships.all()} == {tenant_a.tenant.pk, tenant_b.tenant.pk}
        assert _tenants_seen("accounts_membership") == {tenant_a.tenant.pk}  # raw SQL stays in the tenant
