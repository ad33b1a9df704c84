"""Usage ledger and quotas (billing issue).

CONTRACT used by the LLM gateway and the embedders (implementation pending in the billing issue):

    quota_reserve(*, tenant, context, provider, model, max_input_tokens, max_output_tokens) -> Reservation
        Atomically reserve the call's maximum cost before the call; raises billing.errors.QuotaExceeded.
    usage_record(*, tenant, context, provider, model, server="", usage, latency_ms=None, fallback_from="",
                 reservation=None) -> UsageRecord
        Append one ledger row per provider call (idempotent on context.idempotency_key) and settle the
        reservation to the actual usage.
    quota_release(*, reservation) -> None
        Give back a reservation when the call failed before producing anything billable.
"""

from __future__ import annotations

from billing.types import Usage, UsageContext


class Reservation:
    """Placeholder until the billing issue lands: reserves nothing."""

    def __init__(self, tenant=None, amount=0):
        self.tenant = tenant
        self.amount = amount


def quota_reserve(*, tenant, context: UsageContext, provider: str, model: str, max_input_tokens: int,
                  max_output_tokens: int) -> Reservation:
    return Reservation(tenant)


def usage_record(*, tenant, context: UsageContext, provider: str, model: str, server: str = "", usage: Usage,
                 latency_ms: float | None = None, fallback_from: str = "", reservation: Reservation | None = None):
    return None


def quota_release(*, reservation: Reservation) -> None:
    return None
