"""Helpers for other apps: one answer's usage by stage, chat response headers, the quota error response,
and the soft-limit banner."""

from decimal import Decimal

import pytest
from django.template import Context, Template

from billing.errors import QuotaExceeded
from billing.models import Plan
from billing.selectors import usage_for_message, usage_for_messages, usage_headers
from billing.services import quota_reserve, subscription_set
from billing.types import Stage
from tests.factories.billing import PlanFactory, record_usage, usage_context
from tests.support.api_views import raised_through_api

pytestmark = pytest.mark.django_db


@pytest.fixture
def answer(tenant_a):
    tenant = tenant_a.tenant
    record_usage(tenant, model="gpt-4o-mini", stage=Stage.CONDENSE, input_tokens=300, output_tokens=25,
                 message_id=500)
    record_usage(tenant, model="gpt-4o-mini", stage=Stage.EXPANSION, input_tokens=100, output_tokens=60,
                 message_id=500)
    record_usage(tenant, model="gpt-4o-mini", stage=Stage.EXPANSION, input_tokens=100, output_tokens=40,
                 message_id=500)
    record_usage(tenant, model="gpt-4o", stage=Stage.ANSWER, input_tokens=4000, cached=1000, output_tokens=500,
                 message_id=500)
    record_usage(tenant, model="gpt-4o", stage=Stage.ANSWER, input_tokens=1, output_tokens=1, message_id=501)
    return tenant_a


def test_usage_for_message_breaks_down_by_stage_in_pipeline_order(answer):
    usage = usage_for_message(tenant=answer.tenant, message_id=500)
    assert [s.stage for s in usage.stages] == ["condense", "expansion", "answer"]
    expansion = usage.stages[1]
    assert (expansion.calls, expansion.input_tokens, expansion.output_tokens) == (2, 200, 100)
    assert usage.total_tokens == 300 + 25 + 200 + 100 + 4000 + 500
    # answer: 3000 * 2.50 + 1000 * 1.25 + 500 * 10 = 13,750 per 1M
    assert usage.stages[2].cost == Decimal("0.01375")
    assert usage.cost == usage.stages[0].cost + expansion.cost + Decimal("0.01375")
    batch = usage_for_messages(tenant=answer.tenant, message_ids=[500, 501, 502])
    assert batch[501].total_tokens == 2 and not batch[502]


def test_usage_for_message_is_per_tenant(answer, tenant_b):
    assert not usage_for_message(tenant=tenant_b.tenant, message_id=500)


def test_template_include_renders_the_breakdown(answer, rf):
    template = Template("{% load billing_tags %}{% message_usage message_id %}")
    request = rf.get("/")
    request.tenant = answer.tenant
    html = template.render(Context({"message_id": 500, "request": request, "tenant": answer.tenant}))
    assert "Condense question" in html and "Query expansion" in html and "×2" in html
    assert "5,125 tokens" in html
    prefetched = usage_for_messages(tenant=answer.tenant, message_ids=[501])[501]
    assert "2 tokens" in Template("{% load billing_tags %}{% message_usage u %}").render(Context({"u": prefetched}))
    assert Template("{% load billing_tags %}{% message_usage 999 %}").render(
        Context({"tenant": answer.tenant})).strip() == ""


def test_usage_headers_for_chat_responses(answer):
    from accounts.models import ApiKey
    from accounts.tenancy import tenant_scope
    from billing.services import usage_cap_set

    tenant = answer.tenant
    subscription_set(tenant=tenant, plan=PlanFactory(monthly_token_allowance=100_000))
    with tenant_scope(tenant):
        key = ApiKey.objects.get(tenant=tenant)
    headers = usage_headers(tenant=tenant, message_id=500)
    assert headers["X-Usage-Tokens-Used"] == "5127"
    assert headers["X-Usage-Tokens-Limit"] == "100000"
    assert headers["X-Usage-Tokens-Remaining"] == str(100_000 - 5127)
    assert headers["X-Usage-Message-Tokens"] == "5125"
    assert headers["X-Usage-Reset"].endswith("+00:00")
    usage_cap_set(tenant=tenant, kind="api_key", subject_id=key.pk, monthly_token_limit=1000,
                  monthly_cost_limit=None)
    assert usage_headers(tenant=tenant, api_key=key)["X-Usage-Tokens-Remaining"] == "1000"  # the key's cap is lower
    assert all(isinstance(v, str) for v in headers.values())


def test_quota_exceeded_becomes_a_429_with_retry_after(tenant_a):
    subscription_set(tenant=tenant_a.tenant, plan=PlanFactory(monthly_token_allowance=10))
    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(tenant=tenant_a.tenant, context=usage_context(), provider="openai", model="gpt-4o",
                      max_input_tokens=100, max_output_tokens=100)
    response = raised_through_api(refused.value)
    assert response.status_code == 429
    assert int(response["Retry-After"]) == refused.value.retry_after_s > 0
    error = response.data["error"]
    assert error["code"] == "quota_exceeded" and error["limit"] == "monthly_tokens"
    assert error["reset_at"] and error["limit_value"] == "10" and "10 tokens" in error["message"]
    assert response["X-Usage-Reset"] == error["reset_at"]


def test_quota_exceeded_through_the_api_exception_handler(tenant_a):
    response = raised_through_api(QuotaExceeded("Over the limit.", limit="requests_per_minute", retry_after_s=17))
    assert response.status_code == 429 and response["Retry-After"] == "17"
    assert response.data["error"]["code"] == "quota_exceeded"


def test_banner_for_admins_at_80_and_100_percent(tenant_a, client_a):
    from tests.conftest import web_client

    tenant = tenant_a.tenant
    subscription_set(tenant=tenant, plan=PlanFactory(monthly_token_allowance=1000, enforcement=Plan.Enforcement.HARD))
    assert "usage-banner" not in client_a.get("/accounts/settings/").content.decode()
    record_usage(tenant, input_tokens=800, output_tokens=50)
    page = client_a.get("/accounts/settings/").content.decode()
    assert "usage-banner warn" in page and "85%" in page
    member_page = web_client(tenant_a.member, tenant).get("/accounts/settings/").content.decode()
    assert "usage-banner" not in member_page
    record_usage(tenant, input_tokens=200, output_tokens=0)
    page = client_a.get("/accounts/settings/").content.decode()
    assert "usage-banner full" in page and "refused" in page
