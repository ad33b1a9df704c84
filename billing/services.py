"""Usage ledger and quotas: the writes.

CONTRACT used by the LLM gateway and the embedders:

    quota_reserve(*, tenant, context, provider, model, max_input_tokens, max_output_tokens) -> Reservation
        Atomically reserve the call's maximum cost before the call; raises billing.errors.QuotaExceeded.
    usage_record(*, tenant, context, provider, model, server="", usage, latency_ms=None, fallback_from="",
                 reservation=None) -> UsageRecord
        Append one ledger row per provider call (idempotent on context.idempotency_key) and settle the
        reservation to the actual usage.
    quota_release(*, reservation) -> None
        Give back a reservation when the call failed before producing anything billable.

Each function sets the tenant scope itself, so it may be called from any thread or task.
"""

from __future__ import annotations

import logging
from datetime import UTC
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import connection, transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import ADMIN_ROLES, ApiKey, Membership, Tenant
from accounts.tenancy import system_scope, tenant_scope
from billing import pricing, quota
from billing.models import Plan, QuotaCounter, Subject, Subscription, UsageCap, UsageRecord
from billing.types import Reservation, Stage, Usage, UsageContext

__all__ = [
    "Reservation", "quota_reserve", "usage_record", "quota_release", "reservations_expire", "usage_cap_set",
    "subscription_set", "quota_notice_send",
]

logger = logging.getLogger(__name__)


def _tenant(tenant) -> Tenant:
    if isinstance(tenant, Tenant):
        return tenant
    return Tenant.objects.get(pk=tenant)


def _max_call_seconds() -> float:
    return settings.BILLING_MAX_CALL_SECONDS


# ---------------------------------------------------------------- reserve / record / release


def quota_reserve(*, tenant, context: UsageContext, provider: str, model: str, max_input_tokens: int,
                  max_output_tokens: int) -> Reservation:
    """Set aside the most this call can use (prompt estimate + max output) against every limit that applies:
    the plan's monthly tokens/cost (when hard) and per-minute rates, and the key's and user's caps.
    Raises QuotaExceeded, before anything is sent to a model, when one of them would be passed."""
    tenant = _tenant(tenant)
    tokens = max(int(max_input_tokens or 0), 0) + max(int(max_output_tokens or 0), 0)
    now = timezone.now()
    with tenant_scope(tenant):
        limits = quota.limits_for(tenant=tenant, api_key_id=context.api_key_id, user_id=context.user_id)
        cost = Decimal(0)
        if limits.needs_cost:
            price = pricing.price_lookup(provider=provider, model=model, at=now)
            cost = pricing.max_call_cost(price, max_input_tokens=max(int(max_input_tokens or 0), 0),
                                         max_output_tokens=max(int(max_output_tokens or 0), 0),
                                         max_call_seconds=_max_call_seconds())
        return quota.reserve(tenant=tenant, limits=limits, tokens=tokens, cost=cost,
                             api_key_id=context.api_key_id, user_id=context.user_id, now=now)


_RECORD_SQL = """
WITH res AS (
  UPDATE billing_quotareservation SET state = 'settled'
  WHERE id = %(rid)s::uuid AND state = 'open'
  RETURNING tokens, cost, period_start, window_start, api_key_id, user_id
), ins AS (
  INSERT INTO billing_usagerecord
    (tenant_id, created_at, stage, idempotency_key, user_id, api_key_id, assistant_id, conversation_id,
     message_id, document_id, provider, model, server, fallback_from, input_tokens, cached_input_tokens,
     output_tokens, estimated, latency_ms, price_id, price_tier, cost)
  VALUES (%(tenant)s, %(created_at)s, %(stage)s, %(key)s, %(user_id)s, %(api_key_id)s, %(assistant_id)s,
          %(conversation_id)s, %(message_id)s, %(document_id)s, %(provider)s, %(model)s, %(server)s,
          %(fallback_from)s, %(input)s, %(cached)s, %(output)s, %(estimated)s, %(latency_ms)s, %(price_id)s,
          %(tier)s, %(cost)s)
  ON CONFLICT ON CONSTRAINT billing_usage_idempotency DO NOTHING
  RETURNING id
), daily AS (
  INSERT INTO billing_usagedaily AS d
    (tenant_id, day, dimension, provider, model, price_version_id, stage, assistant_id, api_key_id, calls,
     estimated_calls, input_tokens, cached_input_tokens, output_tokens, cost)
  SELECT %(tenant)s, %(day)s::date, dim.dimension, dim.provider, dim.model, dim.price_version_id, dim.stage,
         dim.assistant_id, dim.api_key_id, 1, %(estimated_int)s, %(input)s, %(cached)s, %(output)s,
         %(cost)s::numeric
  FROM ins CROSS JOIN (VALUES
    ('api_key', '', '', NULL::bigint, '', NULL::bigint, %(api_key_id)s::bigint),
    ('assistant', '', '', NULL, '', %(assistant_id)s::bigint, NULL),
    ('model', %(provider)s, %(model)s, %(price_id)s::bigint, '', NULL, NULL),
    ('stage', '', '', NULL, %(stage)s, NULL, NULL)
  ) AS dim (dimension, provider, model, price_version_id, stage, assistant_id, api_key_id)
  ORDER BY dim.dimension  -- one lock order for every writer
  ON CONFLICT ON CONSTRAINT billing_daily_key DO UPDATE SET
    calls = d.calls + 1, estimated_calls = d.estimated_calls + EXCLUDED.estimated_calls,
    input_tokens = d.input_tokens + EXCLUDED.input_tokens,
    cached_input_tokens = d.cached_input_tokens + EXCLUDED.cached_input_tokens,
    output_tokens = d.output_tokens + EXCLUDED.output_tokens, cost = d.cost + EXCLUDED.cost
), conv AS (
  INSERT INTO billing_usageconversation AS cv
    (tenant_id, conversation_id, first_day, last_day, calls, input_tokens, cached_input_tokens, output_tokens, cost)
  SELECT %(tenant)s, %(conversation_id)s::bigint, %(day)s::date, %(day)s::date, 1, %(input)s, %(cached)s,
         %(output)s, %(cost)s::numeric
  FROM ins WHERE %(conversation_id)s::bigint IS NOT NULL
  ON CONFLICT ON CONSTRAINT billing_conversation_key DO UPDATE SET
    calls = cv.calls + 1, input_tokens = cv.input_tokens + EXCLUDED.input_tokens,
    cached_input_tokens = cv.cached_input_tokens + EXCLUDED.cached_input_tokens,
    output_tokens = cv.output_tokens + EXCLUDED.output_tokens, cost = cv.cost + EXCLUDED.cost,
    first_day = LEAST(cv.first_day, EXCLUDED.first_day), last_day = GREATEST(cv.last_day, EXCLUDED.last_day)
), deltas (kind, rank, subject_id, period_start, du, dc, rt, rc, ws, wt) AS (
  -- the call's usage, on the team and on its key and user (only when the record is new) ...
  SELECT 'tenant'::text, 0, 0::bigint, %(period)s::date, %(total)s::bigint, %(cost)s::numeric, 0::bigint,
         0::numeric, NULL::timestamptz, 0::bigint FROM ins
  UNION ALL SELECT 'api_key', 1, %(api_key_id)s::bigint, %(period)s::date, %(total)s, %(cost)s, 0, 0, NULL, 0
    FROM ins WHERE %(api_key_id)s::bigint IS NOT NULL
  UNION ALL SELECT 'user', 2, %(user_id)s::bigint, %(period)s::date, %(total)s, %(cost)s, 0, 0, NULL, 0
    FROM ins WHERE %(user_id)s::bigint IS NOT NULL
  -- ... and the reservation given back, from the subjects it was taken from (when it was still open)
  UNION ALL SELECT 'tenant', 0, 0, res.period_start, 0, 0, -res.tokens, -res.cost, res.window_start,
                   (SELECT count(*) FROM ins) * %(total)s - res.tokens FROM res
  UNION ALL SELECT 'api_key', 1, res.api_key_id, res.period_start, 0, 0, -res.tokens, -res.cost, NULL, 0
    FROM res WHERE res.api_key_id IS NOT NULL
  UNION ALL SELECT 'user', 2, res.user_id, res.period_start, 0, 0, -res.tokens, -res.cost, NULL, 0
    FROM res WHERE res.user_id IS NOT NULL
), up AS (
  INSERT INTO billing_quotacounter AS c
    (tenant_id, kind, subject_id, period_start, used_tokens, used_cost, reserved_tokens, reserved_cost,
     window_start, window_tokens, window_requests, notified_pct, hard)
  SELECT %(tenant)s, kind, subject_id, period_start, sum(du), sum(dc), sum(rt), sum(rc), max(ws), sum(wt), 0, 0,
         false
  FROM deltas GROUP BY kind, rank, subject_id, period_start
  ORDER BY period_start, rank, subject_id  -- one lock order for every writer: no deadlocks
""" + quota.COUNTER_DELTA_UPSERT + """
)
SELECT (SELECT id FROM ins), t.id, t.used_tokens, t.used_cost, t.notified_pct
FROM (SELECT 1) AS one LEFT JOIN up AS t ON t.kind = 'tenant' AND t.period_start = %(period)s::date
"""


def usage_record(*, tenant, context: UsageContext, provider: str, model: str, server: str = "", usage: Usage,
                 latency_ms: float | None = None, fallback_from: str = "",
                 reservation: Reservation | None = None) -> UsageRecord:
    """Append the call to the ledger, once per idempotency key, and settle its reservation to the actual usage.

    A repeated key (a retried task, a replayed stream) adds nothing: the reservation it brought is given back
    and the first record is returned (with `was_duplicate = True`)."""
    tenant = _tenant(tenant)
    if context.stage not in Stage.ALL:
        raise ValueError(f"unknown usage stage {context.stage!r}")
    if not context.idempotency_key:
        raise ValueError("usage_record needs context.idempotency_key")
    now = timezone.now()
    input_tokens = max(int(usage.input_tokens or 0), 0)
    cached = min(max(int(usage.cached_input_tokens or 0), 0), input_tokens)
    output_tokens = max(int(usage.output_tokens or 0), 0)
    with tenant_scope(tenant):
        price = pricing.price_lookup(provider=provider, model=model, at=now)
        cost, tier = pricing.price_cost(price, input_tokens=input_tokens, cached_input_tokens=cached,
                                        output_tokens=output_tokens, latency_ms=latency_ms)
        values = {
            "rid": reservation.id if reservation is not None else None,
            "tenant": tenant.pk, "created_at": now, "day": now.astimezone(UTC).date(),
            "stage": context.stage, "key": context.idempotency_key[:200],
            "user_id": context.user_id, "api_key_id": context.api_key_id, "assistant_id": context.assistant_id,
            "conversation_id": context.conversation_id, "message_id": context.message_id,
            "document_id": context.document_id, "provider": provider[:40], "model": model[:120],
            "server": (server or "")[:200], "fallback_from": (fallback_from or "")[:200],
            "input": input_tokens, "cached": cached, "output": output_tokens,
            "estimated": bool(usage.estimated), "estimated_int": int(bool(usage.estimated)),
            "latency_ms": latency_ms, "price_id": price.pk if price else None, "tier": tier, "cost": cost,
            "period": quota.period_start(now), "total": input_tokens + output_tokens,
        }
        # One statement: ledger row, rollups, settlement and counters commit together or not at all.
        with connection.cursor() as cursor:
            cursor.execute(_RECORD_SQL, values)
            record_id, counter_id, used_tokens, used_cost, notified = cursor.fetchone()
        if record_id is not None and counter_id is not None:
            limits = getattr(reservation, "limits", None) or quota.limits_for(tenant=tenant)
            _notify_if_crossed(tenant, counter_id=counter_id, used_tokens=used_tokens, used_cost=used_cost,
                               notified=notified, limits=limits, period=values["period"])
        if record_id is None:
            record = UsageRecord.objects.get(tenant=tenant, idempotency_key=values["key"])
            record.was_duplicate = True
            return record
    record = UsageRecord(
        id=record_id, tenant=tenant, created_at=now, stage=context.stage, idempotency_key=values["key"],
        user_id=context.user_id, api_key_id=context.api_key_id, assistant_id=context.assistant_id,
        conversation_id=context.conversation_id, message_id=context.message_id, document_id=context.document_id,
        provider=values["provider"], model=values["model"], server=values["server"],
        fallback_from=values["fallback_from"], input_tokens=input_tokens, cached_input_tokens=cached,
        output_tokens=output_tokens, estimated=bool(usage.estimated), latency_ms=latency_ms, price=price,
        price_tier=tier, cost=cost,
    )
    record.was_duplicate = False
    return record


def quota_release(*, reservation: Reservation | None) -> None:
    """Give a reservation back (the call failed before anything billable). Releasing twice is harmless."""
    if reservation is None or reservation.id is None:
        return
    if reservation.tenant is not None:
        with tenant_scope(_tenant(reservation.tenant)):
            quota.release(reservation=reservation)
    else:  # a hand-built reservation: find its tenant under the system scope
        with system_scope():
            quota.release(reservation=reservation)


def reservations_expire(*, tenant=None) -> int:
    """Return allowance held by calls that never settled (their process died). Run by Celery beat."""
    if tenant is not None:
        with tenant_scope(tenant):
            return quota.reservations_expire(tenant=tenant)
    with system_scope():
        return quota.reservations_expire()


# ---------------------------------------------------------------- soft-limit notices


def _notify_if_crossed(tenant: Tenant, *, counter_id: int, used_tokens: int, used_cost: Decimal, notified: int,
                       limits: quota.Limits, period) -> None:
    pct = usage_percent(limits.tenant, used_tokens=used_tokens, used_cost=used_cost)
    threshold = 100 if pct >= 100 else 80 if pct >= 80 else 0
    if threshold <= notified:
        return
    claimed = QuotaCounter.objects.filter(pk=counter_id, notified_pct__lt=threshold).update(notified_pct=threshold)
    if claimed:
        from billing.tasks import quota_notice_task  # cycle: billing.tasks -> billing.services

        tenant_id = tenant.pk
        transaction.on_commit(lambda: quota_notice_task.delay(tenant_id, threshold, period.isoformat()))


def usage_percent(limits: quota.SubjectLimits, *, used_tokens: int, used_cost: Decimal) -> float:
    shares = []
    if limits.token_cap:
        shares.append(used_tokens / limits.token_cap)
    if limits.cost_cap:
        shares.append(float(Decimal(used_cost) / Decimal(limits.cost_cap)))
    return max(shares, default=0.0) * 100


def quota_notice_send(*, tenant: Tenant, threshold: int, period) -> int:
    """Email the team's owners and admins that usage passed `threshold`% of the plan. Returns mails sent."""
    admins = list(Membership.objects.select_related("user").filter(tenant=tenant, role__in=ADMIN_ROLES))
    with tenant_scope(tenant):
        limits = quota.limits_for(tenant=tenant)
    sent = 0
    for membership in admins:
        with translation.override(settings.LANGUAGE_CODE):
            context = {"tenant": tenant, "threshold": threshold, "period": period, "limits": limits.tenant,
                       "plan_name": limits.plan_name, "hard": limits.tenant.hard,
                       "usage_url": settings.SITE_URL.rstrip("/") + "/usage/"}
            subject = _("[ragdesk] %(team)s has used %(pct)s%% of its monthly plan") % {
                "team": tenant.name, "pct": threshold}
            body = render_to_string("billing/email/quota_notice.txt", context)
        sent += send_mail(subject, body, None, [membership.user.email], fail_silently=True)
    return sent


# ---------------------------------------------------------------- plans and caps


def subscription_set(*, tenant: Tenant, plan: Plan) -> Subscription:
    with tenant_scope(tenant):  # subscriptions are tenant data under row-level security
        subscription, _created = Subscription.objects.update_or_create(tenant=tenant, defaults={"plan": plan})
    return subscription


def usage_cap_set(*, tenant: Tenant, kind: str, subject_id: int, monthly_token_limit: int | None,
                  monthly_cost_limit: Decimal | None) -> UsageCap | None:
    """Set (or with both limits None, remove) a monthly cap on one API key or user of the tenant."""
    if kind not in (Subject.API_KEY, Subject.USER):
        raise ValidationError(_("Caps apply to an API key or a user."))
    for value in (monthly_token_limit, monthly_cost_limit):
        if value is not None and value < 0:
            raise ValidationError(_("A cap cannot be negative."))
    with tenant_scope(tenant):
        exists = (ApiKey.objects.filter(tenant=tenant, pk=subject_id).exists() if kind == Subject.API_KEY
                  else Membership.objects.filter(tenant=tenant, user_id=subject_id).exists())
        if not exists:
            raise ValidationError(_("No such API key or member in this team."))
        if monthly_token_limit is None and monthly_cost_limit is None:
            UsageCap.objects.filter(tenant=tenant, kind=kind, subject_id=subject_id).delete()
            return None
        cap, _created = UsageCap.objects.update_or_create(
            tenant=tenant, kind=kind, subject_id=subject_id,
            defaults={"monthly_token_limit": monthly_token_limit, "monthly_cost_limit": monthly_cost_limit},
        )
        return cap
