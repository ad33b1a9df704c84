"""Which price version applies to a call, and what the call costs. Decimal all the way: never float money."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection

from billing.models import Price

MILLION = Decimal(1_000_000)
MS_PER_HOUR = Decimal(3_600_000)
COST_QUANTUM = Decimal("1e-12")

# Self-hosted servers: free unless an operator prices them, and never priced with a cloud model's rates.
LOCAL_PROVIDERS = frozenset({"ollama", "llamacpp", "llama.cpp", "llama_cpp", "local", "vllm", "lmstudio"})
WILDCARD = "*"


def is_local(provider: str) -> bool:
    return provider.lower() in LOCAL_PROVIDERS


def model_candidates(model: str) -> list[str]:
    """Names to look a model up by, most specific first: "models/gpt-4o-2024-08-06" -> gpt-4o-2024-08-06,
    gpt-4o-2024-08, gpt-4o-2024, gpt-4o, gpt (dated and suffixed variants fall back to their base name)."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    candidates = [name]
    if ":" in name:  # Ollama tags: "llama3.2:3b" -> "llama3.2"
        name = name.split(":", 1)[0]
        candidates.append(name)
    parts = name.split("-")
    candidates += ["-".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    return list(dict.fromkeys(c for c in candidates if c))


def _provider_matches(row_provider: str, provider: str) -> bool:
    # The openai provider also reaches Gemini and xAI through their OpenAI-compatible endpoints, so cloud
    # prices match across cloud providers; local models only ever take a local provider's price.
    row_provider, provider = row_provider.lower(), provider.lower()
    return row_provider == provider or (not is_local(row_provider) and not is_local(provider))


_PRICE_COLUMNS = ("id", "provider", "model", "effective_from", "input_per_mtok", "cached_input_per_mtok",
                  "output_per_mtok", "tier_threshold_tokens", "input_per_mtok_above", "cached_input_per_mtok_above",
                  "output_per_mtok_above", "per_gpu_hour")
_PRICE_SQL = (f"SELECT {', '.join(_PRICE_COLUMNS)} FROM billing_price "
              "WHERE model = ANY(%s) AND effective_from <= %s ORDER BY effective_from DESC, id DESC")


def price_lookup(*, provider: str, model: str, at: datetime) -> Price | None:
    """The price version in effect at `at`, or None (self-hosted or unpriced: the call costs 0).

    One indexed query per call (raw SQL: this runs on every model call, the ORM's overhead would dominate)."""
    candidates = model_candidates(model)
    with connection.cursor() as cursor:
        cursor.execute(_PRICE_SQL, [[*candidates, WILDCARD], at])
        rows = [Price(**dict(zip(_PRICE_COLUMNS, row, strict=True))) for row in cursor.fetchall()]
    if not rows:
        return None
    for name in candidates:
        exact = [r for r in rows if r.model.lower() == name and r.provider.lower() == provider.lower()]
        if exact:
            return exact[0]
        compatible = [r for r in rows if r.model.lower() == name and _provider_matches(r.provider, provider)]
        if compatible:
            return compatible[0]
    wildcard = [r for r in rows if r.model == WILDCARD and r.provider.lower() == provider.lower()]
    return wildcard[0] if wildcard else None


@dataclass(frozen=True)
class Rates:
    input: Decimal
    cached_input: Decimal
    output: Decimal
    tier: int  # 0: base rates, 1: above the tier threshold


def rates_for(price: Price, *, input_tokens: int) -> Rates:
    above = price.tier_threshold_tokens is not None and input_tokens > price.tier_threshold_tokens
    if above:
        input_rate = _first(price.input_per_mtok_above, price.input_per_mtok)
        output_rate = _first(price.output_per_mtok_above, price.output_per_mtok)
        cached_rate = _first(price.cached_input_per_mtok_above, input_rate)
    else:
        input_rate = price.input_per_mtok
        output_rate = price.output_per_mtok
        cached_rate = _first(price.cached_input_per_mtok, input_rate)
    return Rates(Decimal(input_rate), Decimal(cached_rate), Decimal(output_rate), 1 if above else 0)


def _first(*values):
    return next(v for v in values if v is not None)


def price_cost(price: Price | None, *, input_tokens: int, cached_input_tokens: int = 0, output_tokens: int = 0,
               latency_ms: float | None = None) -> tuple[Decimal, int]:
    """(cost in USD, tier) of one call. `input_tokens` includes the cached ones (OpenAI's convention)."""
    if price is None:
        return Decimal(0), 0
    input_tokens = max(int(input_tokens), 0)
    cached = min(max(int(cached_input_tokens), 0), input_tokens)
    rates = rates_for(price, input_tokens=input_tokens)
    cost = ((input_tokens - cached) * rates.input + cached * rates.cached_input
            + max(int(output_tokens), 0) * rates.output) / MILLION
    if price.per_gpu_hour is not None and latency_ms:
        cost += Decimal(price.per_gpu_hour) * Decimal(str(round(float(latency_ms), 3))) / MS_PER_HOUR
    return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP), rates.tier


def max_call_cost(price: Price | None, *, max_input_tokens: int, max_output_tokens: int,
                  max_call_seconds: float) -> Decimal:
    """The most a call can cost: the whole prompt uncached, every output token, the longest duration."""
    return price_cost(price, input_tokens=max_input_tokens, cached_input_tokens=0, output_tokens=max_output_tokens,
                      latency_ms=max_call_seconds * 1000)[0]
