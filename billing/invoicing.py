"""Monthly statements, and the seam where a payment provider plugs in.

`statement_build` turns a month of the ledger (via its daily rollup) into an invoice-like `Statement`.
Payment is out of scope: `InvoiceSink` is the interface a Stripe integration would implement (map each line
to an invoice item on `Subscription.external_customer_id`, finalize, return the invoice id). The configured
sink (settings.BILLING_INVOICE_SINK, default NullInvoiceSink) receives statements from
`manage.py billing_statements --month YYYY-MM --issue`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone
from django.utils.module_loading import import_string

from accounts.tenancy import tenant_scope
from billing import quota
from billing.models import Price, Subscription, UsageDaily
from billing.periods import Period

logger = logging.getLogger(__name__)
CENT = Decimal("0.01")


@dataclass
class StatementLine:
    description: str
    provider: str = ""
    model: str = ""
    price: Price | None = None
    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    amount: Decimal = Decimal(0)
    kind: str = "usage"  # "usage" or "fee"


@dataclass
class Statement:
    tenant_id: int
    tenant_name: str
    number: str
    period: Period
    issued_on: date
    plan_name: str
    currency: str = "USD"
    lines: list[StatementLine] = field(default_factory=list)
    external_customer_id: str = ""

    @property
    def is_open(self) -> bool:
        """The month is not over yet: the statement shows usage so far."""
        return self.period.end >= self.issued_on

    @property
    def usage_total(self) -> Decimal:
        return sum((line.amount for line in self.lines if line.kind == "usage"), Decimal(0))

    @property
    def fees_total(self) -> Decimal:
        return sum((line.amount for line in self.lines if line.kind == "fee"), Decimal(0))

    @property
    def total(self) -> Decimal:
        """Exact sum of the lines."""
        return self.usage_total + self.fees_total

    @property
    def total_due(self) -> Decimal:
        """What a payment provider would charge: the exact total rounded half-up to the cent."""
        return self.total.quantize(CENT, rounding=ROUND_HALF_UP)

    @property
    def total_tokens(self) -> int:
        return sum(line.input_tokens + line.output_tokens for line in self.lines)


def statement_build(*, tenant, period: Period) -> Statement:
    """One line per model and price version used in the period, plus the plan's fee (for whole months)."""
    with tenant_scope(tenant):
        subscription = Subscription.objects.select_related("plan").filter(tenant=tenant).first()
        limits = quota.limits_for(tenant=tenant)
        rows = (UsageDaily.objects.filter(tenant=tenant, day__range=(period.start, period.end),
                                          dimension=UsageDaily.Dimension.MODEL)
                .values("provider", "model", "price_version_id")
                .order_by("provider", "model", "price_version_id"))
        rows = rows.annotate(calls_sum=Sum("calls"), input_sum=Sum("input_tokens"),
                             cached_sum=Sum("cached_input_tokens"), output_sum=Sum("output_tokens"),
                             cost_sum=Sum("cost"))
        rows = list(rows)
    prices = Price.objects.in_bulk([r["price_version_id"] for r in rows if r["price_version_id"]])
    statement = Statement(
        tenant_id=tenant.pk, tenant_name=tenant.name, number=f"{tenant.slug}-{period.start:%Y%m}",
        period=period, issued_on=timezone.now().date(), plan_name=limits.plan_name,
        external_customer_id=subscription.external_customer_id if subscription else "",
    )
    if period.is_month and subscription is not None and subscription.plan.monthly_fee:
        statement.lines.append(StatementLine(description=f"{subscription.plan.name} plan", kind="fee",
                                             amount=Decimal(subscription.plan.monthly_fee)))
    for r in rows:
        statement.lines.append(StatementLine(
            description=f"{r['model']} ({r['provider']})", provider=r["provider"], model=r["model"],
            price=prices.get(r["price_version_id"]), calls=r["calls_sum"] or 0, input_tokens=r["input_sum"] or 0,
            cached_input_tokens=r["cached_sum"] or 0, output_tokens=r["output_sum"] or 0,
            amount=Decimal(r["cost_sum"] or 0),
        ))
    return statement


STATEMENT_CSV_HEADER = ["statement", "period_start", "period_end", "kind", "description", "provider", "model",
                        "price_version", "calls", "input_tokens", "cached_input_tokens", "output_tokens",
                        "amount_usd"]


def statement_csv_rows(statement: Statement):
    yield STATEMENT_CSV_HEADER
    for line in statement.lines:
        yield [statement.number, statement.period.start, statement.period.end, line.kind, line.description,
               line.provider, line.model, line.price.pk if line.price else "", line.calls, line.input_tokens,
               line.cached_input_tokens, line.output_tokens, f"{line.amount:f}"]
    yield [statement.number, statement.period.start, statement.period.end, "total", "Total", "", "", "", "", "",
           "", "", f"{statement.total:f}"]
    yield [statement.number, statement.period.start, statement.period.end, "total_due", "Total due (rounded)", "",
           "", "", "", "", "", "", f"{statement.total_due:f}"]


class InvoiceSink(Protocol):
    """Where finished statements go. A Stripe implementation would create invoice items for the lines on the
    tenant's customer and return the invoice id; it must be idempotent on `statement.number`."""

    def push(self, statement: Statement) -> str | None: ...


class NullInvoiceSink:
    def push(self, statement: Statement) -> str | None:
        logger.info("statement %s: %s %s (no payment provider configured)", statement.number, statement.total_due,
                    statement.currency)
        return None


def invoice_sink() -> InvoiceSink:
    return import_string(settings.BILLING_INVOICE_SINK)()
