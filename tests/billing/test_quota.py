"""Quotas: reservations against plan limits, key and user caps, rate limits, soft-limit notices."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from accounts.tenancy import tenant_scope
from billing.errors import QuotaExceeded
from billing.models import Plan, QuotaCounter, QuotaReservation
from billing.services import (
    quota_release,
    quota_reserve,
    reservations_expire,
    subscription_set,
    usage_cap_set,
    usage_record,
)
from tests.factories.billing import PlanFactory, usage, usage_context

pytestmark = pytest.mark.django_db


def reserve(tenant, tokens_in=100, tokens_out=100, model="gpt-4o", provider="openai", **ids):
    return quota_reserve(tenant=tenant, context=usage_context(**ids), provider=provider, model=model,
                         max_input_tokens=tokens_in, max_output_tokens=tokens_out)


def counter(tenant, kind="tenant", subject_id=0):
    with tenant_scope(tenant):
        return QuotaCounter.objects.get(kind=kind, subject_id=subject_id)


@pytest.fixture
def hard_plan(tenant_a):
    plan = PlanFactory(monthly_token_allowance=1000, enforcement=Plan.Enforcement.HARD)
    subscription_set(tenant=tenant_a.tenant, plan=plan)
    return plan


def test_hard_token_cap_refuses_the_call_that_would_pass_it(tenant_a, hard_plan):
    tenant = tenant_a.tenant
    held = [reserve(tenant, 100, 100) for _ in range(5)]  # 5 x 200 = the whole 1000
    with pytest.raises(QuotaExceeded) as refused:
        reserve(tenant, 1, 0)
    exc = refused.value
    assert exc.limit == "monthly_tokens" and exc.scope == "tenant" and exc.limit_value == 1000
    now = timezone.now()
    assert exc.reset_at.day == 1 and exc.reset_at > now
    assert abs(exc.retry_after_s - (exc.reset_at - now).total_seconds()) < 5
    assert "1,000 tokens" in exc.message
    # Releasing one (the call failed) frees its share again.
    quota_release(reservation=held[0])
    quota_release(reservation=held[0])  # twice is harmless
    assert counter(tenant).reserved_tokens == 800
    reserve(tenant, 100, 100)


def test_settling_replaces_the_reservation_with_the_actual_usage(tenant_a, hard_plan):
    tenant = tenant_a.tenant
    reservation = reserve(tenant, 300, 500)
    assert counter(tenant).reserved_tokens == 800
    usage_record(tenant=tenant, context=usage_context(), provider="openai", model="gpt-4o", usage=usage(120, 30),
                 reservation=reservation)
    c = counter(tenant)
    assert (c.reserved_tokens, c.used_tokens) == (0, 150)
    # The freed allowance is usable at once: 850 left.
    reserve(tenant, 800, 50)
    with pytest.raises(QuotaExceeded):
        reserve(tenant, 1, 0)


def test_a_duplicate_record_gives_its_reservation_back(tenant_a, hard_plan):
    tenant = tenant_a.tenant
    ctx = usage_context()
    usage_record(tenant=tenant, context=ctx, provider="openai", model="gpt-4o", usage=usage(100, 10),
                 reservation=reserve(tenant, 100, 100))
    retry = reserve(tenant, 100, 100)
    again = usage_record(tenant=tenant, context=ctx, provider="openai", model="gpt-4o", usage=usage(100, 10),
                         reservation=retry)
    assert again.was_duplicate
    c = counter(tenant)
    assert (c.used_tokens, c.reserved_tokens) == (110, 0)
    with tenant_scope(tenant):
        assert QuotaReservation.objects.get(pk=retry.id).state == "settled"


def test_cost_cap_reserves_the_most_the_call_can_cost(tenant_a):
    tenant = tenant_a.tenant
    subscription_set(tenant=tenant, plan=PlanFactory(monthly_cost_cap=Decimal("0.05")))
    # gpt-4o: 1000 in + 4000 out at most = 0.0025 + 0.04 = $0.0425
    reservation = reserve(tenant, 1000, 4000)
    assert reservation.cost == Decimal("0.0425")
    with pytest.raises(QuotaExceeded) as refused:
        reserve(tenant, 1000, 4000)
    assert refused.value.limit == "monthly_cost" and "$0.0500" in refused.value.message
    # Self-hosted calls cost nothing and still go through.
    reserve(tenant, 1000, 4000, model="llama3.2", provider="ollama")


def test_per_minute_request_limit_with_retry_after(tenant_a):
    tenant = tenant_a.tenant
    subscription_set(tenant=tenant, plan=PlanFactory(requests_per_minute=3, enforcement=Plan.Enforcement.SOFT))
    for _ in range(3):
        reserve(tenant)
    with pytest.raises(QuotaExceeded) as refused:
        reserve(tenant)
    assert refused.value.limit == "requests_per_minute"
    assert 1 <= refused.value.retry_after_s <= 61
    assert refused.value.reset_at.second == 0


def test_tokens_per_minute_limit(tenant_a):
    tenant = tenant_a.tenant
    subscription_set(tenant=tenant, plan=PlanFactory(tokens_per_minute=1000))
    reserve(tenant, 400, 400)
    with pytest.raises(QuotaExceeded) as refused:
        reserve(tenant, 200, 100)
    assert refused.value.limit == "tokens_per_minute"


def test_api_key_cap_limits_only_that_key(tenant_a):
    tenant = tenant_a.tenant
    from accounts.models import ApiKey

    with tenant_scope(tenant):
        key = ApiKey.objects.get(tenant=tenant)
    usage_cap_set(tenant=tenant, kind="api_key", subject_id=key.pk, monthly_token_limit=500,
                  monthly_cost_limit=None)
    reserve(tenant, 200, 200, api_key_id=key.pk)
    with pytest.raises(QuotaExceeded) as refused:
        reserve(tenant, 100, 100, api_key_id=key.pk)
    assert refused.value.scope == "api_key" and "API key" in refused.value.message
    # Nothing half-done: the refused call reserved nothing, on the key or on the team.
    assert counter(tenant).reserved_tokens == 400
    assert counter(tenant, "api_key", key.pk).reserved_tokens == 400
    reserve(tenant, 100, 100)  # the web app (no key) is not capped


def test_user_cap(tenant_a):
    tenant, member = tenant_a.tenant, tenant_a.member
    usage_cap_set(tenant=tenant, kind="user", subject_id=member.pk, monthly_token_limit=None,
                  monthly_cost_limit=Decimal("0.01"))
    usage_record(tenant=tenant, context=usage_context(user_id=member.pk), provider="openai", model="gpt-4o",
                 usage=usage(0, 1000))  # $0.01 used
    with pytest.raises(QuotaExceeded) as refused:
        reserve(tenant, 10, 10, user_id=member.pk)
    assert refused.value.scope == "user" and refused.value.limit == "monthly_cost"
    reserve(tenant, 10, 10, user_id=tenant_a.owner.pk)


def test_caps_only_for_the_tenants_own_keys_and_members(tenant_a, tenant_b):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        usage_cap_set(tenant=tenant_a.tenant, kind="user", subject_id=tenant_b.owner.pk, monthly_token_limit=5,
                      monthly_cost_limit=None)


def test_soft_plan_serves_past_the_allowance_and_notifies_admins_once_per_level(
        tenant_a, django_capture_on_commit_callbacks, settings):
    from config.celery import app

    app.conf.task_always_eager = True
    try:
        tenant = tenant_a.tenant
        subscription_set(tenant=tenant, plan=PlanFactory(monthly_token_allowance=1000,
                                                         enforcement=Plan.Enforcement.SOFT))

        def spend(tokens):
            with django_capture_on_commit_callbacks(execute=True):
                usage_record(tenant=tenant, context=usage_context(), provider="openai", model="gpt-4o-mini",
                             usage=usage(tokens, 0), reservation=reserve(tenant, tokens, 0))

        spend(700)
        assert mail.outbox == []
        spend(150)  # 85%
        assert len(mail.outbox) == 2  # owner and admin, not the member
        assert {m.to[0] for m in mail.outbox} == {tenant_a.owner.email, tenant_a.admin.email}
        assert "80%" in mail.outbox[0].subject
        spend(50)  # 90%: already told about 80%
        assert len(mail.outbox) == 2
        spend(500)  # 140%: served (soft), and the 100% notice goes out
        assert len(mail.outbox) == 4 and "100%" in mail.outbox[-1].subject
        assert counter(tenant).used_tokens == 1400
    finally:
        app.conf.task_always_eager = False


def test_hard_plan_notices_too(tenant_a, django_capture_on_commit_callbacks):
    from config.celery import app

    app.conf.task_always_eager = True
    try:
        tenant = tenant_a.tenant
        subscription_set(tenant=tenant, plan=PlanFactory(monthly_token_allowance=100))
        with django_capture_on_commit_callbacks(execute=True):
            usage_record(tenant=tenant, context=usage_context(), provider="ollama", model="x", usage=usage(90, 0),
                         reservation=reserve(tenant, 90, 0))
        assert len(mail.outbox) == 2 and "refused" in mail.outbox[0].body
    finally:
        app.conf.task_always_eager = False


def test_reservations_of_a_dead_process_expire(tenant_a, hard_plan):
    tenant = tenant_a.tenant
    leaked = [reserve(tenant, 250, 250), reserve(tenant, 250, 250)]
    with pytest.raises(QuotaExceeded):
        reserve(tenant, 100, 100)
    with tenant_scope(tenant):
        QuotaReservation.objects.filter(pk=leaked[0].id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert reservations_expire() == 1
    assert counter(tenant).reserved_tokens == 500
    # Settling after expiry still bills the usage, without giving the reservation back twice.
    usage_record(tenant=tenant, context=usage_context(), provider="openai", model="gpt-4o", usage=usage(100, 0),
                 reservation=leaked[0])
    c = counter(tenant)
    assert (c.reserved_tokens, c.used_tokens) == (500, 100)


def test_a_refusal_first_recovers_expired_reservations(tenant_a, hard_plan):
    tenant = tenant_a.tenant
    leaked = reserve(tenant, 500, 500)
    with tenant_scope(tenant):
        QuotaReservation.objects.filter(pk=leaked.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    reserve(tenant, 500, 500)  # would not fit next to the leaked one


def test_no_plan_limits_means_no_reservation_round_trip(tenant_a):
    tenant = tenant_a.tenant
    subscription_set(tenant=tenant, plan=Plan.objects.get(code="unlimited"))
    reservation = reserve(tenant, 10**9, 10**9)
    assert reservation.id is None
    usage_record(tenant=tenant, context=usage_context(), provider="ollama", model="x", usage=usage(10, 5),
                 reservation=reservation)
    assert counter(tenant).used_tokens == 15


def test_the_default_plan_is_the_tenants_plan_code(tenant_a):
    tenant = tenant_a.tenant
    assert tenant.plan == "free"
    from billing.selectors import allowance_status

    allowance = allowance_status(tenant=tenant)
    assert (allowance.plan_code, allowance.token_cap, allowance.hard) == ("free", 1_000_000, False)
