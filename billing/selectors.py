"""Usage reads: the usage page, the API, exports, per-message breakdowns and response headers.

Period reports read the rollups (billing_usagedaily, billing_usageconversation), never the ledger, so a page
costs about the same with a thousand records or millions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db import connection
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from accounts.tenancy import tenant_scope
from billing import quota
from billing.labels import labels_for
from billing.models import STAGE_LABELS, Plan, QuotaCounter, Subject, Subscription, UsageDaily, UsageRecord
from billing.periods import Period
from billing.types import Stage

# Pipeline order, for showing one answer's stages.
STAGE_ORDER = [Stage.CONDENSE, Stage.EXPANSION, Stage.EMBEDDING, Stage.RERANK, Stage.COMPRESSION, Stage.ANSWER,
               Stage.EXTRACTIVE]
GROUP_BY = ("day", "model", "provider", "stage", "assistant", "api_key", "conversation")


def decimal_str(value) -> str:
    """A Decimal as plain digits without trailing zeros: 0.002445, 10, 0 (never 1E+1)."""
    return f"{Decimal(value or 0).normalize():f}"


@dataclass
class Metrics:
    calls: int = 0
    estimated_calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict:
        return {"calls": self.calls, "estimated_calls": self.estimated_calls, "input_tokens": self.input_tokens,
                "cached_input_tokens": self.cached_input_tokens, "output_tokens": self.output_tokens,
                "total_tokens": self.total_tokens, "cost": decimal_str(self.cost)}


@dataclass
class Row:
    key: object
    label: str
    metrics: Metrics


@dataclass
class UsageSummary:
    period: Period
    totals: Metrics
    by_day: list[Row]
    by_model: list[Row]
    by_stage: list[Row]
    by_assistant: list[Row]
    by_api_key: list[Row]
    top_conversations: list[Row]


def _metrics(values) -> Metrics:
    calls, est, inp, cached, out, cost = values
    return Metrics(int(calls or 0), int(est or 0), int(inp or 0), int(cached or 0), int(out or 0),
                   Decimal(cost or 0))


_SUMS = ("SUM(calls), SUM(estimated_calls), SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens), "
         "SUM(cost)")
# One pass over the period's rollup rows: each dimension's values, plus the per-day series (from the stage
# rows: every call has exactly one stage, so they sum to the totals).
_SUMMARY_SQL = f"""
SELECT dimension, day, provider, model, stage, assistant_id, api_key_id, {_SUMS}
FROM billing_usagedaily
WHERE tenant_id = %s AND day BETWEEN %s AND %s
GROUP BY GROUPING SETS ((dimension, provider, model, stage, assistant_id, api_key_id), (dimension, day))
"""


def _by_cost(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (-r.metrics.cost, -r.metrics.total_tokens, r.label))


def _add(a: Metrics, b: Metrics) -> Metrics:
    return Metrics(a.calls + b.calls, a.estimated_calls + b.estimated_calls, a.input_tokens + b.input_tokens,
                   a.cached_input_tokens + b.cached_input_tokens, a.output_tokens + b.output_tokens, a.cost + b.cost)


def usage_summary(*, tenant, period: Period, top: int = 10) -> UsageSummary:
    """Everything the usage page shows for a period: one pass over the daily rollup + the top conversations."""
    with tenant_scope(tenant), connection.cursor() as cursor:
        cursor.execute(_SUMMARY_SQL, [tenant.pk, period.start, period.end])
        rows = cursor.fetchall()
        totals = Metrics()
        days: dict[date, Metrics] = {}
        models: dict[tuple[str, str], Metrics] = {}
        stages, assistants, keys = [], [], []
        for dimension, day, provider, model, stage, assistant_id, api_key_id, *sums in rows:
            m = _metrics(sums)
            if day is not None:
                if dimension == "stage":
                    days[day] = m
            elif dimension == "model":  # one row per price version: merge them
                models[(provider, model)] = _add(models.get((provider, model), Metrics()), m)
            elif dimension == "stage":
                stages.append(Row(stage, str(STAGE_LABELS.get(stage, stage)), m))
                totals = _add(totals, m)
            elif dimension == "assistant":
                assistants.append((assistant_id, m))
            elif dimension == "api_key":
                keys.append((api_key_id, m))
        assistant_labels = labels_for("assistant", tenant=tenant, ids=[a for a, _m in assistants])
        key_labels = labels_for("api_key", tenant=tenant, ids=[k for k, _m in keys])
        conversations = _top_conversations(cursor, tenant=tenant, period=period, limit=top)
    return UsageSummary(
        period=period,
        totals=totals,
        by_day=[Row(d, formats.date_format(d, "SHORT_DATE_FORMAT"), days.get(d, Metrics())) for d in period.days],
        by_model=_by_cost([Row(f"{p}/{m}", f"{m} ({p})", v) for (p, m), v in models.items()]),
        by_stage=_by_cost(stages),
        by_assistant=_by_cost([Row(a, assistant_labels[a], m) for a, m in assistants]),
        by_api_key=_by_cost([Row(k, key_labels[k], m) for k, m in keys]),
        top_conversations=conversations,
    )


# Conversations active in the period (they used a model in it), ranked by their whole cost so far.
_CONVERSATIONS_SQL = """
SELECT conversation_id, calls, 0, input_tokens, cached_input_tokens, output_tokens, cost
FROM billing_usageconversation
WHERE tenant_id = %s AND last_day >= %s AND first_day <= %s
ORDER BY cost DESC, input_tokens + output_tokens DESC
LIMIT %s
"""


def _top_conversations(cursor, *, tenant, period: Period, limit: int | None) -> list[Row]:
    sql = _CONVERSATIONS_SQL if limit else _CONVERSATIONS_SQL.replace("LIMIT %s", "")
    params = [tenant.pk, period.start, period.end] + ([limit] if limit else [])
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    labels = labels_for("conversation", tenant=tenant, ids=[r[0] for r in rows])
    return [Row(r[0], labels[r[0]], _metrics(r[1:])) for r in rows]


# group_by -> (dimension rows to read, columns to group them by)
_GROUPS = {
    "day": ("stage", "day"), "model": ("model", "provider, model"), "provider": ("model", "provider"),
    "stage": ("stage", "stage"), "assistant": ("assistant", "assistant_id"), "api_key": ("api_key", "api_key_id"),
}


def usage_grouped(*, tenant, period: Period, group_by: str) -> tuple[Metrics, list[Row]]:
    """(totals, rows) for one grouping: day, model, provider, stage, assistant, api_key or conversation."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
    base = "FROM billing_usagedaily WHERE tenant_id = %s AND day BETWEEN %s AND %s AND dimension = %s"
    with tenant_scope(tenant), connection.cursor() as cursor:
        cursor.execute(f"SELECT {_SUMS} {base}", [tenant.pk, period.start, period.end, "stage"])
        totals = _metrics(cursor.fetchone())
        if group_by == "conversation":
            return totals, _top_conversations(cursor, tenant=tenant, period=period, limit=None)
        dimension, columns = _GROUPS[group_by]
        cursor.execute(f"SELECT {columns}, {_SUMS} {base} GROUP BY {columns} ORDER BY {columns}",
                       [tenant.pk, period.start, period.end, dimension])
        fetched = cursor.fetchall()
    if group_by == "day":
        found = {r[0]: _metrics(r[1:]) for r in fetched}
        return totals, [Row(d.isoformat(), d.isoformat(), found.get(d, Metrics())) for d in period.days]
    if group_by == "model":
        rows = [Row(f"{r[0]}/{r[1]}", f"{r[1]} ({r[0]})", _metrics(r[2:])) for r in fetched]
    elif group_by in ("provider", "stage"):
        rows = [Row(r[0], str(STAGE_LABELS.get(r[0], r[0])) if group_by == "stage" else r[0], _metrics(r[1:]))
                for r in fetched]
    else:
        kind = "assistant" if group_by == "assistant" else "api_key"
        labels = labels_for(kind, tenant=tenant, ids=[r[0] for r in fetched])
        rows = [Row(r[0], labels[r[0]], _metrics(r[1:])) for r in fetched]
    return totals, _by_cost(rows)


def usage_daily_rows(*, tenant, period: Period) -> Iterator[dict]:
    """The period's rollup rows (the CSV export): per day, one row per model, stage, assistant and API key,
    with readable names in `label`."""
    with tenant_scope(tenant):
        rows = list(UsageDaily.objects.filter(tenant=tenant, day__range=(period.start, period.end))
                    .order_by("day", "dimension", "provider", "model", "price_version_id", "stage", "assistant_id",
                              "api_key_id")
                    .values("day", "dimension", "provider", "model", "price_version_id", "stage", "assistant_id",
                            "api_key_id", "calls", "estimated_calls", "input_tokens", "cached_input_tokens",
                            "output_tokens", "cost"))
        assistants = labels_for("assistant", tenant=tenant,
                                ids=[r["assistant_id"] for r in rows if r["dimension"] == "assistant"])
        keys = labels_for("api_key", tenant=tenant, ids=[r["api_key_id"] for r in rows if r["dimension"] == "api_key"])
    for r in rows:
        dimension = r["dimension"]
        if dimension == "model":
            r["key"], r["label"] = f"{r['provider']}/{r['model']}", f"{r['model']} ({r['provider']})"
        elif dimension == "stage":
            r["key"], r["label"] = r["stage"], str(STAGE_LABELS.get(r["stage"], r["stage"]))
        elif dimension == "assistant":
            r["key"], r["label"] = r["assistant_id"], assistants[r["assistant_id"]]
        else:
            r["key"], r["label"] = r["api_key_id"], keys[r["api_key_id"]]
        yield r


def usage_record_rows(*, tenant, period: Period, chunk: int = 2000) -> Iterator[UsageRecord]:
    """The ledger itself for a period, oldest first, streamed in chunks (the detailed CSV export)."""
    start = datetime.combine(period.start, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(period.end, datetime.max.time(), tzinfo=UTC)
    with tenant_scope(tenant):
        qs = (UsageRecord.objects.filter(tenant=tenant, created_at__range=(start, end))
              .order_by("created_at", "id"))
        yield from qs.iterator(chunk_size=chunk)


# ---------------------------------------------------------------- one answer


@dataclass
class StageUsage:
    stage: str
    label: str
    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    estimated: bool = False
    models: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class MessageUsage:
    message_id: int
    stages: list[StageUsage] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(s.total_tokens for s in self.stages)

    @property
    def input_tokens(self) -> int:
        return sum(s.input_tokens for s in self.stages)

    @property
    def output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.stages)

    @property
    def cost(self) -> Decimal:
        return sum((s.cost for s in self.stages), Decimal(0))

    @property
    def estimated(self) -> bool:
        return any(s.estimated for s in self.stages)

    def __bool__(self) -> bool:
        return bool(self.stages)


def usage_for_messages(*, tenant, message_ids) -> dict[int, MessageUsage]:
    """Per-stage tokens and cost of each answer (condense, expansion, ..., answer), for admins to see."""
    ids = [int(i) for i in message_ids if i is not None]
    result = {i: MessageUsage(i) for i in ids}
    if not ids:
        return result
    with tenant_scope(tenant):
        records = (UsageRecord.objects.filter(tenant=tenant, message_id__in=ids)
                   .values_list("message_id", "stage", "provider", "model", "input_tokens", "cached_input_tokens",
                                "output_tokens", "cost", "estimated"))
        stages: dict[tuple[int, str], StageUsage] = {}
        for message_id, stage, _provider, model, inp, cached, out, cost, estimated in records:
            s = stages.setdefault((message_id, stage), StageUsage(stage, str(STAGE_LABELS.get(stage, stage))))
            s.calls += 1
            s.input_tokens += inp
            s.cached_input_tokens += cached
            s.output_tokens += out
            s.cost += cost
            s.estimated = s.estimated or estimated
            if model not in s.models:
                s.models.append(model)
    order = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    for (message_id, _stage), s in sorted(stages.items(), key=lambda kv: order.get(kv[0][1], 99)):
        result[message_id].stages.append(s)
    return result


def usage_for_message(*, tenant, message_id: int) -> MessageUsage:
    return usage_for_messages(tenant=tenant, message_ids=[message_id])[int(message_id)]


# ---------------------------------------------------------------- allowance, headers, banner


@dataclass
class Allowance:
    plan_code: str
    plan_name: str
    hard: bool
    token_cap: int | None
    cost_cap: Decimal | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    used_tokens: int
    used_cost: Decimal
    period_start: date
    reset_at: datetime
    key_token_cap: int | None = None
    key_cost_cap: Decimal | None = None
    key_used_tokens: int = 0
    key_used_cost: Decimal = Decimal(0)

    @property
    def percent(self) -> float:
        shares = []
        if self.token_cap:
            shares.append(self.used_tokens / self.token_cap)
        if self.cost_cap:
            shares.append(float(self.used_cost / self.cost_cap))
        return round(max(shares, default=0.0) * 100, 1)

    @property
    def tokens_remaining(self) -> int | None:
        candidates = [cap - used for cap, used in ((self.token_cap, self.used_tokens),
                                                   (self.key_token_cap, self.key_used_tokens)) if cap is not None]
        return max(min(candidates), 0) if candidates else None

    @property
    def cost_remaining(self) -> Decimal | None:
        candidates = [cap - used for cap, used in ((self.cost_cap, self.used_cost),
                                                   (self.key_cost_cap, self.key_used_cost)) if cap is not None]
        return max(min(candidates), Decimal(0)) if candidates else None

    @property
    def has_limits(self) -> bool:
        return self.token_cap is not None or self.cost_cap is not None


def plan_for(*, tenant) -> Plan | None:
    """The tenant's plan: its subscription's, else the plan whose code is Tenant.plan; None without either."""
    with tenant_scope(tenant):
        subscription = Subscription.objects.filter(tenant=tenant).select_related("plan").first()
    if subscription is not None:
        return subscription.plan
    return Plan.objects.filter(code=tenant.plan or "").first()


def allowance_status(*, tenant, api_key_id: int | None = None, now: datetime | None = None) -> Allowance:
    now = now or timezone.now()
    start = quota.period_start(now)
    with tenant_scope(tenant):
        limits = quota.limits_for(tenant=tenant, api_key_id=api_key_id)
        kinds = [Subject.TENANT] + ([Subject.API_KEY] if api_key_id else [])
        counters = {
            (c.kind, c.subject_id): c
            for c in QuotaCounter.objects.filter(tenant=tenant, period_start=start, kind__in=kinds,
                                                 subject_id__in=[0, api_key_id or 0])
        }
    team = counters.get((Subject.TENANT, 0))
    t = limits.tenant
    allowance = Allowance(
        plan_code=limits.plan_code, plan_name=limits.plan_name, hard=t.hard, token_cap=t.token_cap,
        cost_cap=t.cost_cap, requests_per_minute=t.rpm, tokens_per_minute=t.tpm,
        used_tokens=team.used_tokens if team else 0, used_cost=Decimal(team.used_cost) if team else Decimal(0),
        period_start=start, reset_at=quota.period_reset_at(start),
    )
    if api_key_id:
        key_limits = next((s for s in limits.subjects if s.kind == Subject.API_KEY), None)
        key = counters.get((Subject.API_KEY, api_key_id))
        allowance.key_token_cap = key_limits.token_cap if key_limits else None
        allowance.key_cost_cap = key_limits.cost_cap if key_limits else None
        allowance.key_used_tokens = key.used_tokens if key else 0
        allowance.key_used_cost = Decimal(key.used_cost) if key else Decimal(0)
    return allowance


def _money(value: Decimal) -> str:
    return f"{Decimal(value).quantize(Decimal('0.000001')):f}"


def usage_headers(*, tenant, api_key=None, message_id: int | None = None) -> dict[str, str]:
    """Response headers for a chat call: this month's tokens and cost used, what the plan (and the key's cap)
    leaves, when it resets, and with `message_id` the tokens and cost of that answer."""
    api_key_id = getattr(api_key, "pk", api_key)
    a = allowance_status(tenant=tenant, api_key_id=api_key_id)
    headers = {
        "X-Usage-Period": a.period_start.strftime("%Y-%m"),
        "X-Usage-Tokens-Used": str(a.used_tokens),
        "X-Usage-Cost-Used": _money(a.used_cost),
        "X-Usage-Reset": a.reset_at.isoformat(),
    }
    if a.token_cap is not None:
        headers["X-Usage-Tokens-Limit"] = str(a.token_cap)
    if a.cost_cap is not None:
        headers["X-Usage-Cost-Limit"] = _money(a.cost_cap)
    if a.tokens_remaining is not None:
        headers["X-Usage-Tokens-Remaining"] = str(a.tokens_remaining)
    if a.cost_remaining is not None:
        headers["X-Usage-Cost-Remaining"] = _money(a.cost_remaining)
    if message_id is not None:
        usage = usage_for_message(tenant=tenant, message_id=message_id)
        headers["X-Usage-Message-Tokens"] = str(usage.total_tokens)
        headers["X-Usage-Message-Cost"] = _money(usage.cost)
    return headers


@dataclass
class Banner:
    level: str  # "warn" (80%) or "full" (100%)
    percent: float
    message: str


def usage_banner(*, tenant, allowance: Allowance | None = None) -> Banner | None:
    """The 80% / 100% notice tenant admins see on every page while it applies."""
    a = allowance or allowance_status(tenant=tenant)
    if not a.has_limits or a.percent < 80:
        return None
    when = formats.date_format(a.reset_at, "DATE_FORMAT")
    if a.percent >= 100:
        if a.hard:
            message = _("Your team has used its monthly allowance: new model calls are refused until %(date)s.")
        else:
            message = _("Your team has used its monthly allowance; this plan keeps serving, past the allowance.")
        return Banner("full", a.percent, message % {"date": when})
    message = _("Your team has used %(pct)s%% of its monthly allowance (resets %(date)s).")
    return Banner("warn", a.percent, message % {"pct": formats.number_format(a.percent, 0), "date": when})
