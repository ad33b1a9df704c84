"""The ledger: one append-only record per provider call, idempotent, with rollups and counters in step."""

import io
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import Sum

from accounts.tenancy import tenant_scope
from billing.models import QuotaCounter, UsageConversation, UsageDaily, UsageRecord
from billing.services import usage_record
from billing.types import Stage, Usage, UsageContext
from tests.factories.billing import record_usage, usage_context

pytestmark = pytest.mark.django_db


def test_a_call_is_recorded_with_who_why_and_what(tenant_a):
    tenant = tenant_a.tenant
    record = usage_record(
        tenant=tenant,
        context=usage_context(Stage.CONDENSE, "call-1", user_id=tenant_a.owner.pk, api_key_id=7, assistant_id=3,
                              conversation_id=11, message_id=21),
        provider="openai", model="gpt-4o", server="api.openai.com",
        usage=Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=300), latency_ms=812.5,
        fallback_from="local/llama3.2",
    )
    with tenant_scope(tenant):
        stored = UsageRecord.objects.get(pk=record.pk)
    assert (stored.stage, stored.provider, stored.model, stored.server) == ("condense", "openai", "gpt-4o",
                                                                            "api.openai.com")
    assert (stored.user_id, stored.api_key_id, stored.assistant_id, stored.conversation_id, stored.message_id) == (
        tenant_a.owner.pk, 7, 3, 11, 21)
    assert (stored.input_tokens, stored.cached_input_tokens, stored.output_tokens) == (1000, 400, 300)
    assert stored.cost == Decimal("0.005") and stored.price.model == "gpt-4o"
    assert stored.fallback_from == "local/llama3.2" and stored.latency_ms == 812.5 and not stored.estimated


def test_the_same_idempotency_key_counts_once(tenant_a):
    tenant = tenant_a.tenant
    first = record_usage(tenant, key="task-42:answer", input_tokens=100, output_tokens=50, conversation_id=5)
    again = record_usage(tenant, key="task-42:answer", input_tokens=999, output_tokens=999, conversation_id=5)
    assert again.was_duplicate and not first.was_duplicate
    assert again.pk == first.pk and again.input_tokens == 100
    with tenant_scope(tenant):
        assert UsageRecord.objects.count() == 1
        daily = UsageDaily.objects.get(dimension="stage")
        assert (daily.calls, daily.input_tokens, daily.output_tokens) == (1, 100, 50)
        assert UsageDaily.objects.count() == 4  # one row per dimension: model, stage, assistant, api key
        assert UsageConversation.objects.get().calls == 1
        assert QuotaCounter.objects.get(kind="tenant").used_tokens == 150


def test_keys_are_per_tenant(tenant_a, tenant_b):
    a = record_usage(tenant_a.tenant, key="shared-key")
    b = record_usage(tenant_b.tenant, key="shared-key")
    assert not a.was_duplicate and not b.was_duplicate and a.pk != b.pk


@pytest.mark.django_db(transaction=True)  # a savepoint rollback after a database error needs its own test
def test_records_are_append_only(tenant_a):
    record = record_usage(tenant_a.tenant)
    with pytest.raises(ValueError):
        record.save()
    with tenant_scope(tenant_a.tenant):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            UsageRecord.objects.filter(pk=record.pk).update(output_tokens=0)
        assert UsageRecord.objects.get(pk=record.pk).output_tokens == 20


def test_estimated_usage_is_marked(tenant_a):
    record = usage_record(tenant=tenant_a.tenant, context=usage_context(), provider="ollama", model="llama3.2",
                          usage=Usage(input_tokens=50, output_tokens=7, estimated=True))
    assert record.estimated and record.cost == 0
    with tenant_scope(tenant_a.tenant):
        assert UsageDaily.objects.get(dimension="stage").estimated_calls == 1


def test_rollups_and_counters_equal_the_ledger(tenant_a):
    tenant = tenant_a.tenant
    for i in range(30):
        record_usage(tenant, model=["gpt-4o", "gpt-5-mini", "llama3.2"][i % 3],
                     provider="ollama" if i % 3 == 2 else "openai", stage=Stage.ALL[i % 6],
                     input_tokens=100 + i, cached=i % 7, output_tokens=i, assistant_id=i % 4 or None,
                     api_key_id=i % 2 or None, conversation_id=i % 5 or None)
    sums = ("input_tokens", "cached_input_tokens", "output_tokens", "cost")
    with tenant_scope(tenant):
        ledger = UsageRecord.objects.aggregate(*[Sum(f) for f in sums])
        for dimension in ("model", "stage", "assistant", "api_key"):  # each dimension adds up to the ledger
            daily = UsageDaily.objects.filter(dimension=dimension)
            assert daily.aggregate(*[Sum(f) for f in sums]) == ledger, dimension
            assert daily.aggregate(Sum("calls"))["calls__sum"] == 30
        conv = UsageConversation.objects.aggregate(Sum("cost"))["cost__sum"]
        assert conv == UsageRecord.objects.filter(conversation_id__isnull=False).aggregate(Sum("cost"))["cost__sum"]
        counter = QuotaCounter.objects.get(kind="tenant")
        assert counter.used_tokens == ledger["input_tokens__sum"] + ledger["output_tokens__sum"]
        assert counter.used_cost == ledger["cost__sum"]


def test_ledger_rows_are_invisible_to_another_tenant_even_in_raw_sql(tenant_a, tenant_b):
    record_usage(tenant_a.tenant, key="secret-call")
    with tenant_scope(tenant_b.tenant), connection.cursor() as cursor:
        for table in ("billing_usagerecord", "billing_usagedaily", "billing_quotacounter"):
            cursor.execute(f"SELECT count(*) FROM {table}")
            assert cursor.fetchone()[0] == 0, table


def test_bad_input_is_refused_before_anything_is_written(tenant_a):
    with pytest.raises(ValueError):
        usage_record(tenant=tenant_a.tenant, context=usage_context("thinking"), provider="openai", model="gpt-4o",
                     usage=Usage(1, 0, 1))
    with pytest.raises(ValueError):
        usage_record(tenant=tenant_a.tenant, context=UsageContext(stage="answer", idempotency_key=""),
                     provider="openai", model="gpt-4o", usage=Usage(1, 0, 1))
    with tenant_scope(tenant_a.tenant):
        assert not UsageRecord.objects.exists()


def test_rebuilding_rollups_from_the_ledger_gives_the_same_numbers(tenant_a):
    from django.core.management import call_command

    tenant = tenant_a.tenant
    for i in range(12):
        record_usage(tenant, model=["gpt-4o", "gpt-5-nano"][i % 2], stage=Stage.ALL[i % 6], input_tokens=50 * i,
                     cached=i, output_tokens=i, api_key_id=i % 3 or None, user_id=tenant_a.owner.pk,
                     conversation_id=i % 4 or None)

    def snapshot():
        with tenant_scope(tenant):
            daily = sorted(UsageDaily.objects.values_list("day", "dimension", "model", "stage", "api_key_id", "calls",
                                                          "input_tokens", "cached_input_tokens", "output_tokens",
                                                          "cost"), key=repr)
            conv = sorted(UsageConversation.objects.values_list("conversation_id", "calls", "cost"), key=repr)
            counters = sorted(QuotaCounter.objects.values_list("kind", "subject_id", "used_tokens", "used_cost"),
                              key=repr)
        return daily, conv, counters

    before = snapshot()
    with tenant_scope(tenant):
        UsageDaily.objects.all().delete()
        QuotaCounter.objects.update(used_tokens=0)
    call_command("billing_rebuild_rollups", tenant=tenant.slug, stdout=io.StringIO())
    assert snapshot() == before
