import itertools
from datetime import UTC, datetime
from decimal import Decimal

import factory

from billing.models import Plan, Price
from billing.types import Stage, Usage, UsageContext

_keys = itertools.count(1)


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Price

    provider = "openai"
    model = factory.Sequence(lambda n: f"test-model-{n}")
    effective_from = datetime(2024, 1, 1, tzinfo=UTC)
    input_per_mtok = Decimal("1.00")
    cached_input_per_mtok = Decimal("0.10")
    output_per_mtok = Decimal("4.00")


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    code = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.Sequence(lambda n: f"Plan {n}")
    enforcement = Plan.Enforcement.HARD


def usage_context(stage: str = Stage.ANSWER, key: str | None = None, **ids) -> UsageContext:
    """A UsageContext with a fresh idempotency key unless one is given."""
    return UsageContext(stage=stage, idempotency_key=key or f"test-call-{next(_keys)}", **ids)


def usage(input_tokens: int = 100, output_tokens: int = 20, cached: int = 0, estimated: bool = False) -> Usage:
    return Usage(input_tokens=input_tokens, cached_input_tokens=cached, output_tokens=output_tokens,
                 estimated=estimated)


def record_usage(tenant, *, provider="openai", model="gpt-4o-mini", stage=Stage.ANSWER, key=None,
                 input_tokens=100, output_tokens=20, cached=0, reservation=None, **ids):
    """Write one ledger record through the real service."""
    from billing.services import usage_record

    return usage_record(tenant=tenant, context=usage_context(stage, key, **ids), provider=provider, model=model,
                        usage=usage(input_tokens, output_tokens, cached), latency_ms=12.5,
                        reservation=reservation)
