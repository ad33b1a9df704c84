"""A usage limit reached by a search's own model calls (query expansion, passage compression, the query's
embedding through the gateway) is a quota refusal: the search API answers 429 with Retry-After and nothing
reaches the model, instead of a 200 whose warning calls the model unavailable."""

import pytest

from billing.models import Plan
from billing.services import subscription_set
from tests.factories.billing import PlanFactory, record_usage
from tests.factories.search import make_indexed_document, make_search_kb


@pytest.fixture
def allowance_used_up(tenant_a):
    plan = PlanFactory(monthly_token_allowance=1000, enforcement=Plan.Enforcement.HARD)
    subscription_set(tenant=tenant_a.tenant, plan=plan)
    record_usage(tenant_a.tenant, input_tokens=1000, output_tokens=0)
    return plan


@pytest.mark.parametrize("step", ["expansion", "compression", "query embedding"])
def test_search_api_answers_a_quota_refusal_with_429_and_retry_after(api_a, tenant_a, fake_llm, allowance_used_up,
                                                                     step):
    tenant = tenant_a.tenant
    if step == "query embedding":
        kb = make_search_kb(tenant, model=f"gateway:{fake_llm.embed_target}@512", dim=512)
        options = {}
    else:
        kb = make_search_kb(tenant, retrieval={f"{step}_model": fake_llm.target})
        options = {step: True}  # turned on for this call, as an API client may
    make_indexed_document(tenant, kb, ["Parking is free for visitors on weekends."])
    response = api_a.post(f"/api/v1/knowledge-bases/{kb.pk}/search",
                          {"query": "visitor parking weekend", "options": options}, format="json")
    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded" and error["limit"] == "monthly_tokens"
    assert "unavailable" not in error["message"]
    assert fake_llm.stats()["requests"] == 0  # refused before anything was sent
