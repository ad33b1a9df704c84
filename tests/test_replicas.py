"""Read replicas (config/replicas.py) against a real streaming standby of the embedded PostgreSQL.

The module copies the running server once (tests/support/standby.py: pg_basebackup, about a minute) and reads
the test database through the copy as the alias replica_0, as DATABASE_REPLICA_URLS would configure it. Skipped,
with the reason, where no standby can be started (another PostgreSQL than the embedded one, say).
"""

import pytest
from django.conf import settings as django_settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import CaptureQueriesContext, override_settings

from accounts.rls import guard_problem
from accounts.tenancy import TenantScopeMissing, no_scope, system_scope, tenant_scope
from config import replicas
from config.settings.base import replica_database
from knowledge import services
from knowledge.models import Chunk, Document
from knowledge.search import bm25, parallel
from knowledge.search.models import IndexStats
from knowledge.search.selectors import search
from tests.factories.knowledge import make_kb
from tests.factories.search import make_indexed_document, make_search_kb
from tests.support.standby import Standby, StandbyUnavailable
from tests.support.waiting import wait_for

ALIAS = "replica_0"
QUERY = "How long is the refund window?"

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, ALIAS])]


@pytest.fixture(scope="module")
def standby(django_db_setup):
    primary = connections[DEFAULT_DB_ALIAS].settings_dict
    try:
        node = Standby.create(primary_host=primary["HOST"] or "127.0.0.1", primary_port=int(primary["PORT"]))
    except StandbyUnavailable as exc:
        pytest.skip(f"no streaming standby of the test PostgreSQL could be started: {exc}")
    url = node.url(user=primary["USER"], dbname=primary["NAME"])
    # What settings do for each of DATABASE_REPLICA_URLS, for a server that exists only from now on.
    connections.settings[ALIAS] = connections.configure_settings(
        {DEFAULT_DB_ALIAS: primary, ALIAS: replica_database(url)})[ALIAS]
    try:
        # A generous bound: under this machine's load replay can trail by seconds; one test sets its own.
        with override_settings(DATABASE_REPLICA_URLS=[url], DATABASE_REPLICA_MAX_LAG_SECONDS=60.0):
            yield node
    finally:
        parallel.shutdown()  # the dense side's thread holds connections to both servers
        connections[ALIAS].close()
        del connections[ALIAS]
        del connections.settings[ALIAS]
        node.remove()


def reads_from_replica(tenant) -> bool:
    return replicas.read_alias(tenant=tenant) == ALIAS


def caught_up(*tenants) -> None:
    for tenant in tenants:
        try:
            wait_for(lambda t=tenant: reads_from_replica(t), timeout=120, interval=0.1)
        except AssertionError:
            with connections[ALIAS].cursor() as cursor:
                cursor.execute(replicas._STATE_SQL)
                state = cursor.fetchone()
            written = replicas._redis(django_settings.REDIS_URL).get(replicas._mark_key(tenant.pk))
            raise AssertionError(f"tenant {tenant.pk} still not served by the replica: (standby, replayed, lag) "
                                 f"{state}, tenant's last write at {written}") from None


def ingest(tenant, kb, title: str, text: str) -> Document:
    """A document through the real pipeline, in this process, until it is ready."""
    document, _created = services.document_create_from_text(tenant=tenant, kb=kb, title=title, text=text,
                                                             enqueue=False)
    document = services.document_process(tenant=tenant, document_id=document.pk)
    assert document.status == Document.Status.READY
    return document


def sql_of(context: CaptureQueriesContext) -> str:
    return "\n".join(query["sql"] for query in context.captured_queries)


def test_search_reads_from_the_replica(standby, tenant_a, settings, monkeypatch):
    settings.SEARCH_SIDES_IN_PARALLEL = False  # both sides on this thread's connections, which the spies watch
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant)
    document = make_indexed_document(tenant, kb, ["Our refund window is 14 days.", "Shipping is free."])
    caught_up(tenant)
    # The BM25 side reads through a binary psycopg cursor, which Django's query capture does not see.
    index_reads = []
    reading = bm25.binary_cursor
    monkeypatch.setattr(bm25, "binary_cursor", lambda using=DEFAULT_DB_ALIAS: index_reads.append(using) or reading(using))
    with (CaptureQueriesContext(connections[ALIAS]) as on_replica,
          CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as on_primary):
        result = search(tenant=tenant, kb_ids=[kb.pk], query=QUERY, k=5)
    assert result.hits[0].document_id == document.pk
    assert index_reads == [ALIAS]  # the BM25 side read its index from the replica
    for table in ("knowledge_knowledgebase", "knowledge_chunk"):
        assert table in sql_of(on_replica), table  # the KB, the dense side and the hydration
    assert on_primary.captured_queries == []
    with connections[ALIAS].cursor() as cursor:  # and that alias is the standby server
        cursor.execute("SELECT pg_is_in_recovery(), inet_server_port()")
        assert cursor.fetchone() == (True, standby.port)


def test_a_document_made_ready_is_found_by_its_tenants_next_search_while_replay_is_paused(
        standby, tenant_a, tenant_b, settings):
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 3600.0  # only the tenant's own write may send it to the primary
    tenant, other = tenant_a.tenant, tenant_b.tenant
    kb, other_kb = make_kb(tenant), make_search_kb(other)
    make_indexed_document(other, other_kb, ["Shipping is free."])
    ingest(tenant, kb, "Deliveries", "Deliveries arrive within three days.")
    caught_up(tenant, other)
    with standby.replay_paused():
        document = ingest(tenant, kb, "Refunds", "Refunds are accepted within 14 days of delivery.")
        result = search(tenant=tenant, kb_ids=[kb.pk], query="refunds accepted within days", k=3)
        assert result.hits[0].document_id == document.pk
        # The primary answered it: the paused replica does not have the document...
        assert replicas.read_alias(tenant=tenant) == DEFAULT_DB_ALIAS
        with tenant_scope(tenant):
            assert not Chunk.objects.using(ALIAS).filter(document_id=document.pk).exists()
            assert Chunk.objects.filter(document_id=document.pk).exists()
        # ...while a tenant whose writes it has replayed still reads from it.
        assert reads_from_replica(other)
    caught_up(tenant)
    with CaptureQueriesContext(connections[ALIAS]) as on_replica:
        again = search(tenant=tenant, kb_ids=[kb.pk], query="refunds accepted within days", k=3)
    assert again.hits[0].document_id == document.pk
    assert "knowledge_chunk" in sql_of(on_replica)


def test_writes_never_go_to_the_replica(standby, tenant_a, settings):
    settings.SEARCH_SIDES_IN_PARALLEL = False
    tenant = tenant_a.tenant
    kb = make_kb(tenant)
    with CaptureQueriesContext(connections[ALIAS]) as on_replica:
        document = ingest(tenant, kb, "Refunds", "A refund takes a week.")
        services.kb_update(tenant=tenant, kb=kb, retrieval={"mode": "bm25"})
        caught_up(tenant)
        # The KB's one chunk holds the query's word, so its idf is negative and BM25 needs the KB's mean idf,
        # which searches on the primary cache on the statistics row; on the replica it is only computed.
        result = search(tenant=tenant, kb_ids=[kb.pk], query="refund", k=3)
        services.document_delete(tenant=tenant, document=document)
    assert [hit.document_id for hit in result.hits] == [document.pk]
    assert result.mode == "bm25"  # the settings just saved
    assert "search_termstat" in sql_of(on_replica)  # the search did read the replica
    verbs = {query["sql"].lstrip().split(None, 1)[0].upper() for query in on_replica.captured_queries}
    assert verbs == {"SELECT"}
    with tenant_scope(tenant):
        assert IndexStats.objects.get(kb_id=kb.pk).average_idf is None


def test_row_level_security_holds_on_the_replica(standby, tenant_a, tenant_b):
    a, b = tenant_a.tenant, tenant_b.tenant
    kb_a, kb_b = make_search_kb(a), make_search_kb(b)
    own = make_indexed_document(a, kb_a, ["Our refund window is 14 days."])
    secret = make_indexed_document(b, kb_b, [QUERY + " The refund window is 30 days."], title="B secret")
    caught_up(a, b)
    assert guard_problem(ALIAS) is None  # the guard and its key came with the copy
    with system_scope():
        assert {a.pk, b.pk} <= set(Chunk.all_tenants.using(ALIAS).values_list("tenant_id", flat=True))
    # Even asked for B's KB, A's search on the replica sees only A's chunks.
    result = search(tenant=a, kb_ids=[kb_a.pk, kb_b.pk], query=QUERY, k=10)
    assert {hit.document_id for hit in result.hits} == {own.pk}
    with tenant_scope(a), connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT DISTINCT tenant_id FROM knowledge_chunk")
        assert [row[0] for row in cursor.fetchall()] == [a.pk]
        cursor.execute("SELECT set_config('app.scope', %s, false)", [f"tenant:{b.pk}"])  # unsigned: worthless
        cursor.execute("SELECT count(*) FROM knowledge_chunk WHERE document_id = %s", [secret.pk])
        assert cursor.fetchone()[0] == 0
    with no_scope():  # no scope: the manager refuses, and the database shows nothing
        with pytest.raises(TenantScopeMissing):
            Chunk.objects.using(ALIAS).count()
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM knowledge_chunk")
            assert cursor.fetchone()[0] == 0


def test_a_replica_lagging_beyond_the_bound_is_passed_over(standby, tenant_a, tenant_b, settings):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant)
    document = make_indexed_document(tenant, kb, ["Our refund window is 14 days."])
    caught_up(tenant)
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 1.0
    with standby.replay_paused():
        make_search_kb(tenant_b.tenant)  # WAL the replica receives and does not apply
        wait_for(lambda: not reads_from_replica(tenant), timeout=30, interval=0.2, what="the lag to pass 1 s")
        with CaptureQueriesContext(connections[ALIAS]) as on_replica:
            result = search(tenant=tenant, kb_ids=[kb.pk], query=QUERY, k=3)
        assert result.hits[0].document_id == document.pk
        assert "knowledge_chunk" not in sql_of(on_replica)  # asked how far behind it is, nothing more
    caught_up(tenant)


def test_a_replica_that_is_down_is_passed_over(standby, tenant_a, monkeypatch):
    monkeypatch.setattr(replicas, "DOWN_SECONDS", 0.0)  # tried again at once, so it is found back up below
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant)
    document = make_indexed_document(tenant, kb, ["Our refund window is 14 days."])
    caught_up(tenant)
    standby.stop()
    try:
        assert replicas.read_alias(tenant=tenant) == DEFAULT_DB_ALIAS
        assert search(tenant=tenant, kb_ids=[kb.pk], query=QUERY, k=3).hits[0].document_id == document.pk
        with monkeypatch.context() as patch:  # gone between that check and the search: the search falls back
            patch.setattr(replicas, "read_alias", lambda *, tenant: ALIAS)
            assert search(tenant=tenant, kb_ids=[kb.pk], query=QUERY, k=3).hits[0].document_id == document.pk
    finally:
        standby.start()
    caught_up(tenant)
