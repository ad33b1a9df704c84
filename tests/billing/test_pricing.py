"""Price maths in Decimal: cached input, tiers, self-hosted, versions; the seeded list prices."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Price, UsageRecord
from billing.pricing import model_candidates, price_cost, price_lookup
from tests.factories.billing import PriceFactory, record_usage

pytestmark = pytest.mark.django_db

M = 1_000_000


def cost_of(provider, model, **tokens):
    price = price_lookup(provider=provider, model=model, at=timezone.now())
    return price_cost(price, **tokens)


# USD per 1M tokens (input, cached input or None, output), as the issue lists them.
LIST_PRICES = {
    "gpt-5-pro": ("15", None, "120"), "gpt-5": ("1.25", "0.125", "10"), "gpt-5-chat-latest": ("1.25", "0.125", "10"),
    "gpt-5-codex": ("1.25", "0.125", "10"), "gpt-4o": ("2.50", "1.25", "10"), "gpt-4.1": ("2.00", "0.50", "8"),
    "gpt-5-mini": ("0.25", "0.025", "2"), "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
    "gpt-4o-mini": ("0.15", "0.075", "0.60"), "gpt-5-nano": ("0.05", "0.005", "0.40"),
    "gpt-4.1-nano": ("0.10", "0.025", "0.40"), "gemini-2.5-flash": ("0.30", None, "2.50"),
    "gemini-2.5-flash-lite": ("0.10", None, "0.40"), "grok-4": ("3", None, "15"), "grok-4-fast": ("0.20", None, "0.50"),
    "grok-3": ("3", None, "15"), "grok-code-fast-1": ("0.20", None, "1.50"),
}


@pytest.mark.parametrize("model", sorted(LIST_PRICES))
def test_seeded_list_prices_per_million_tokens(seeded_prices, model):
    inp, cached, out = (Decimal(v) if v else None for v in LIST_PRICES[model])
    assert cost_of("openai", model, input_tokens=M) == (inp, 0)
    assert cost_of("openai", model, input_tokens=M, cached_input_tokens=M) == (cached if cached else inp, 0)
    assert cost_of("openai", model, input_tokens=0, output_tokens=M) == (out, 0)


def test_cached_input_is_part_of_input_and_billed_at_the_cached_rate(seeded_prices):
    # gpt-4o: 2.50 in / 1.25 cached / 10 out. 1,000 prompt tokens of which 400 cached, 300 out:
    # 600 * 2.50 + 400 * 1.25 + 300 * 10 = 1500 + 500 + 3000 = 5000 per 1M -> $0.005
    cost, tier = cost_of("openai", "gpt-4o", input_tokens=1000, cached_input_tokens=400, output_tokens=300)
    assert cost == Decimal("0.005") and tier == 0
    assert isinstance(cost, Decimal)


def test_tiny_costs_are_exact_not_float(seeded_prices):
    # One cached token of gpt-5-nano is $0.000000005: float maths would not survive summing millions of them.
    cost, _tier = cost_of("openai", "gpt-5-nano", input_tokens=1, cached_input_tokens=1)
    assert cost == Decimal("0.000000005")
    total = sum((cost for _ in range(1_000_000)), Decimal(0))
    assert total == Decimal("0.005")


def test_gemini_pro_tiers_switch_above_200k_prompt_tokens(seeded_prices):
    at_threshold, tier = cost_of("gemini", "gemini-2.5-pro", input_tokens=200_000, output_tokens=1000)
    assert tier == 0
    assert at_threshold == Decimal("200000") * Decimal("1.25") / M + Decimal(1000) * 10 / M  # 0.25 + 0.01
    above, tier = cost_of("gemini", "gemini-2.5-pro", input_tokens=200_001, output_tokens=1000)
    assert tier == 1
    # The whole call moves to the higher rates: 2.50 in, 15 out.
    assert above == (Decimal(200_001) * Decimal("2.50") + Decimal(1000) * 15) / M
    assert above == Decimal("0.5150025")


def test_dated_and_prefixed_model_names_use_their_base_price(seeded_prices):
    assert model_candidates("models/gpt-4o-mini-2024-07-18")[:1] == ["gpt-4o-mini-2024-07-18"]
    price = price_lookup(provider="openai", model="gpt-4o-mini-2024-07-18", at=timezone.now())
    assert price.model == "gpt-4o-mini"
    assert price_lookup(provider="openai", model="gpt-5-mini", at=timezone.now()).model == "gpt-5-mini"
    assert price_lookup(provider="xai", model="grok-4-fast-reasoning", at=timezone.now()).model == "grok-4-fast"
    assert price_lookup(provider="gemini", model="models/gemini-2.5-flash-lite", at=timezone.now()).model == (
        "gemini-2.5-flash-lite")


def test_self_hosted_models_are_free_unless_the_operator_prices_them(seeded_prices):
    assert cost_of("ollama", "llama3.2:3b", input_tokens=5000, output_tokens=500) == (Decimal(0), 0)
    # A local server named like a cloud model still does not take the cloud price.
    assert price_lookup(provider="ollama", model="gpt-4o", at=timezone.now()) is None
    PriceFactory(provider="ollama", model="*", input_per_mtok=Decimal("0.02"), cached_input_per_mtok=None,
                 output_per_mtok=Decimal("0.08"))
    assert cost_of("ollama", "llama3.2:3b", input_tokens=M, output_tokens=M) == (Decimal("0.10"), 0)


def test_gpu_hour_share_charges_the_call_duration(seeded_prices):
    PriceFactory(provider="ollama", model="qwen3", input_per_mtok=0, cached_input_per_mtok=None, output_per_mtok=0,
                 per_gpu_hour=Decimal("1.80"))
    # 2 seconds at $1.80 per GPU-hour = 1.80 * 2000 / 3,600,000 = $0.001
    assert cost_of("ollama", "qwen3:8b", input_tokens=100, output_tokens=100, latency_ms=2000) == (
        Decimal("0.001"), 0)


def test_a_new_price_version_applies_to_new_calls_only(tenant_a, seeded_prices):
    tenant = tenant_a.tenant
    price = PriceFactory(model="versioned-model", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"),
                         effective_from=timezone.now() - timedelta(days=30))
    first = record_usage(tenant, model="versioned-model", input_tokens=M, output_tokens=0)
    assert first.cost == Decimal("1") and first.price == price
    newer = PriceFactory(model="versioned-model", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("4"),
                         effective_from=timezone.now() - timedelta(seconds=1))
    second = record_usage(tenant, model="versioned-model", input_tokens=M, output_tokens=0)
    assert second.cost == Decimal("3") and second.price == newer
    # A version that starts later is not used yet.
    PriceFactory(model="versioned-model", input_per_mtok=Decimal("9"), effective_from=timezone.now() + timedelta(days=1))
    assert record_usage(tenant, model="versioned-model", input_tokens=M, output_tokens=0).cost == Decimal("3")
    from accounts.tenancy import tenant_scope

    with tenant_scope(tenant):
        stored = UsageRecord.objects.get(pk=first.pk)
    assert (stored.cost, stored.price_id) == (Decimal("1"), price.pk)  # the past keeps its price


def test_staff_cannot_edit_a_price_version_in_effect(seeded_prices, admin_client):
    live = Price.objects.get(model="gpt-4o")
    response = admin_client.post(f"/admin/billing/price/{live.pk}/change/", {
        "provider": "openai", "model": "gpt-4o", "effective_from_0": "2025-01-01", "effective_from_1": "00:00:00",
        "input_per_mtok": "99", "output_per_mtok": "99", "note": "hack"})
    assert response.status_code in (200, 302)
    live.refresh_from_db()
    assert live.input_per_mtok == Decimal("2.5")  # read-only: only the note could change
    page = admin_client.get("/admin/billing/price/").content.decode()
    assert "New version" in page and "/admin/billing/price/add/?provider=openai" in page
    assert admin_client.post(f"/admin/billing/price/{live.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Price.objects.filter(pk=live.pk).exists()
