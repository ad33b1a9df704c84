"""Limits and reservations on the quota counters (one row per subject and calendar month, in PostgreSQL).

Why PostgreSQL rather than a Redis script: the ledger row and the counter it moves are written in the same
transaction, so "used" can never drift from the ledger (a crash between a Redis settle and a Postgres insert
could), and one conditional upsert is atomic across every web and worker process: the row lock queues
concurrent reservations of a tenant and the WHERE clause refuses the one that would pass a hard limit. The
price is a few hundred microseconds per call, small next to any model call.

Reservations are rows too, with an expiry: a process that dies between reserve and settle cannot leak
allowance for longer than BILLING_RESERVATION_TTL_S (the expiry sweep gives it back).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from billing.errors import QuotaExceeded
from billing.models import Plan, QuotaReservation, Subject
from billing.types import Reservation

KIND_ORDER = {Subject.TENANT: 0, Subject.API_KEY: 1, Subject.USER: 2}


def reservation_ttl() -> timedelta:
    return timedelta(seconds=settings.BILLING_RESERVATION_TTL_S)


def period_start(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def next_period_start(start: date) -> date:
    return date(start.year + (start.month == 12), start.month % 12 + 1, 1)


def period_reset_at(start: date) -> datetime:
    nxt = next_period_start(start)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=UTC)


# ---------------------------------------------------------------- limits


@dataclass(frozen=True)
class SubjectLimits:
    kind: str
    subject_id: int
    token_cap: int | None = None
    cost_cap: Decimal | None = None
    hard: bool = True
    rpm: int | None = None
    tpm: int | None = None

    @property
    def enforced(self) -> bool:
        monthly = self.hard and (self.token_cap is not None or self.cost_cap is not None)
        return monthly or self.rpm is not None or self.tpm is not None


@dataclass
class Limits:
    plan_code: str = ""
    plan_name: str = ""
    subjects: list[SubjectLimits] = field(default_factory=list)  # the team first, then api key, user

    @property
    def tenant(self) -> SubjectLimits:
        return self.subjects[0]

    @property
    def enforced(self) -> bool:
        return any(s.enforced for s in self.subjects)

    @property
    def needs_cost(self) -> bool:
        return any(s.cost_cap is not None for s in self.subjects)


_LIMITS_SQL = """
SELECT 'tenant', 0, p.monthly_token_allowance, p.monthly_cost_cap, p.enforcement, p.requests_per_minute,
       p.tokens_per_minute, p.code, p.name
FROM billing_plan p
WHERE p.id = COALESCE((SELECT s.plan_id FROM billing_subscription s WHERE s.tenant_id = %(tenant)s),
                      (SELECT p2.id FROM billing_plan p2 WHERE p2.code = %(plan_code)s))
UNION ALL
SELECT c.kind, c.subject_id, c.monthly_token_limit, c.monthly_cost_limit, 'hard', NULL, NULL, '', ''
FROM billing_usagecap c
WHERE c.tenant_id = %(tenant)s
  AND ((c.kind = 'api_key' AND c.subject_id = %(api_key)s) OR (c.kind = 'user' AND c.subject_id = %(user)s))
"""


def limits_for(*, tenant, api_key_id: int | None = None, user_id: int | None = None) -> Limits:
    """The plan's limits and the caps on this key and user, in one query (run inside the tenant's scope)."""
    with connection.cursor() as cursor:
        cursor.execute(_LIMITS_SQL, {"tenant": tenant.pk, "plan_code": tenant.plan or "",
                                     "api_key": api_key_id or -1, "user": user_id or -1})
        rows = cursor.fetchall()
    limits = Limits(subjects=[SubjectLimits(Subject.TENANT, 0)])
    caps = {}
    for kind, subject_id, tokens, cost, enforcement, rpm, tpm, code, name in rows:
        if kind == Subject.TENANT:
            limits.plan_code, limits.plan_name = code, name
            limits.subjects[0] = SubjectLimits(Subject.TENANT, 0, tokens, cost, enforcement == Plan.Enforcement.HARD,
                                               rpm, tpm)
        else:
            caps[kind] = SubjectLimits(kind, subject_id, tokens, cost, True)
    if api_key_id:
        limits.subjects.append(caps.get(Subject.API_KEY, SubjectLimits(Subject.API_KEY, api_key_id)))
    if user_id:
        limits.subjects.append(caps.get(Subject.USER, SubjectLimits(Subject.USER, user_id)))
    return limits


# ---------------------------------------------------------------- reserve

_RESERVE_SQL = """
WITH v(kind, subject_id, token_cap, cost_cap, hard, rpm_cap, tpm_cap) AS (VALUES {values}),
up AS (
  INSERT INTO billing_quotacounter AS c
    (tenant_id, kind, subject_id, period_start, used_tokens, used_cost, reserved_tokens, reserved_cost,
     token_cap, cost_cap, hard, rpm_cap, tpm_cap, window_start, window_requests, window_tokens, notified_pct)
  SELECT %(tenant)s::bigint, v.kind, v.subject_id, %(period)s::date, 0, 0, %(tokens)s::bigint, %(cost)s::numeric,
         v.token_cap, v.cost_cap, v.hard, v.rpm_cap, v.tpm_cap,
         date_trunc('minute', statement_timestamp()), 1, %(tokens)s::bigint, 0
  FROM v
  WHERE (NOT v.hard OR v.token_cap IS NULL OR %(tokens)s::bigint <= v.token_cap)
    AND (NOT v.hard OR v.cost_cap IS NULL OR %(cost)s::numeric <= v.cost_cap)
    AND (v.rpm_cap IS NULL OR 1 <= v.rpm_cap)
    AND (v.tpm_cap IS NULL OR %(tokens)s::bigint <= v.tpm_cap)
  ON CONFLICT ON CONSTRAINT billing_counter_key DO UPDATE SET
    reserved_tokens = c.reserved_tokens + EXCLUDED.reserved_tokens,
    reserved_cost = c.reserved_cost + EXCLUDED.reserved_cost,
    token_cap = EXCLUDED.token_cap, cost_cap = EXCLUDED.cost_cap, hard = EXCLUDED.hard,
    rpm_cap = EXCLUDED.rpm_cap, tpm_cap = EXCLUDED.tpm_cap,
    window_requests = CASE WHEN c.window_start = EXCLUDED.window_start THEN c.window_requests + 1 ELSE 1 END,
    window_tokens = CASE WHEN c.window_start = EXCLUDED.window_start
                         THEN c.window_tokens + EXCLUDED.window_tokens ELSE EXCLUDED.window_tokens END,
    window_start = EXCLUDED.window_start
  WHERE (NOT EXCLUDED.hard OR EXCLUDED.token_cap IS NULL
         OR c.used_tokens + c.reserved_tokens + EXCLUDED.reserved_tokens <= EXCLUDED.token_cap)
    AND (NOT EXCLUDED.hard OR EXCLUDED.cost_cap IS NULL
         OR c.used_cost + c.reserved_cost + EXCLUDED.reserved_cost <= EXCLUDED.cost_cap)
    AND (EXCLUDED.rpm_cap IS NULL OR (CASE WHEN c.window_start = EXCLUDED.window_start
                                           THEN c.window_requests ELSE 0 END) + 1 <= EXCLUDED.rpm_cap)
    AND (EXCLUDED.tpm_cap IS NULL OR (CASE WHEN c.window_start = EXCLUDED.window_start
                                           THEN c.window_tokens ELSE 0 END) + EXCLUDED.window_tokens
                                     <= EXCLUDED.tpm_cap)
  RETURNING c.kind, c.window_start
),
res AS (
  INSERT INTO billing_quotareservation
    (id, tenant_id, period_start, window_start, api_key_id, user_id, tokens, cost, state, created_at, expires_at)
  SELECT %(id)s::uuid, %(tenant)s::bigint, %(period)s::date, (SELECT window_start FROM up WHERE kind = 'tenant'),
         %(api_key)s::bigint, %(user)s::bigint, %(tokens)s::bigint, %(cost)s::numeric, 'open', statement_timestamp(),
         statement_timestamp() + %(ttl)s::interval
  WHERE (SELECT count(*) FROM up) = %(subjects)s::bigint
  RETURNING id, window_start
)
SELECT (SELECT array_agg(kind) FROM up), (SELECT id FROM res), (SELECT window_start FROM res)
"""
_VALUE_ROW = ("(%({})s::text, %({})s::bigint, %({})s::bigint, %({})s::numeric, %({})s::boolean, %({})s::integer, "
              "%({})s::bigint)")


class _Refused(Exception):
    pass


def reserve(*, tenant, limits: Limits, tokens: int, cost: Decimal, api_key_id=None, user_id=None,
            now: datetime | None = None) -> Reservation:
    now = now or timezone.now()
    start = period_start(now)
    subjects = tuple(s.kind for s in limits.subjects)
    if not limits.enforced:
        return Reservation(tenant=tenant, tokens=tokens, cost=cost, period_start=start,
                           api_key_id=api_key_id, user_id=user_id, subjects=(), limits=limits)
    for attempt in range(3):
        try:
            return _reserve_once(tenant=tenant, limits=limits, tokens=tokens, cost=cost, start=start,
                                 api_key_id=api_key_id, user_id=user_id, subjects=subjects)
        except _Refused:
            # A process that died mid-call may be holding allowance: give expired reservations back, retry once.
            if attempt == 0 and reservations_expire(tenant=tenant) > 0:
                continue
            refusal = explain_refusal(tenant=tenant, limits=limits, tokens=tokens, cost=cost, start=start)
            if refusal is not None:
                raise refusal from None
            # The counters moved between the refusal and the explanation (others settled): try again.
    raise explain_refusal(tenant=tenant, limits=limits, tokens=tokens, cost=cost, start=start,
                          fallback=True)


def _reserve_once(*, tenant, limits, tokens, cost, start, api_key_id, user_id, subjects) -> Reservation:
    reservation_id = uuid.uuid4()
    named = {"tenant": tenant.pk, "period": start, "tokens": tokens, "cost": cost, "id": reservation_id,
             "api_key": api_key_id, "user": user_id, "subjects": len(limits.subjects), "ttl": reservation_ttl()}
    rows = []
    for i, s in enumerate(limits.subjects):
        names = [f"{col}{i}" for col in ("kind", "sid", "tcap", "ccap", "hard", "rpm", "tpm")]
        named.update(zip(names, (s.kind, s.subject_id, s.token_cap, s.cost_cap, s.hard, s.rpm, s.tpm), strict=True))
        rows.append(_VALUE_ROW.format(*names))
    sql = _RESERVE_SQL.replace("{values}", ", ".join(rows))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, named)
        _kinds, got_id, window_start = cursor.fetchone()
        if got_id is None:
            raise _Refused
    return Reservation(tenant=tenant, tokens=tokens, cost=cost, id=got_id, period_start=start,
                       window_start=window_start, api_key_id=api_key_id, user_id=user_id, subjects=subjects,
                       limits=limits)


_COUNTERS_SQL = """
SELECT c.kind, c.subject_id, c.used_tokens, c.used_cost, c.reserved_tokens, c.reserved_cost, c.window_start,
       c.window_requests, c.window_tokens, date_trunc('minute', statement_timestamp())
FROM billing_quotacounter c
WHERE c.tenant_id = %s AND c.period_start = %s AND c.kind = ANY(%s)
"""


def explain_refusal(*, tenant, limits: Limits, tokens: int, cost: Decimal, start: date,
                    fallback: bool = False) -> QuotaExceeded | None:
    """Which limit refused the reservation, as the QuotaExceeded to raise (None: none does any more)."""
    with connection.cursor() as cursor:
        cursor.execute(_COUNTERS_SQL, [tenant.pk, start, [s.kind for s in limits.subjects]])
        rows = {(r[0], r[1]): r for r in cursor.fetchall()}
    now = timezone.now()
    month_reset = period_reset_at(start)
    for s in limits.subjects:
        row = rows.get((s.kind, s.subject_id))
        used_t, used_c, res_t, res_c, window, w_req, w_tok, db_minute = (
            (row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9]) if row
            else (0, Decimal(0), 0, Decimal(0), None, 0, 0, None)
        )
        if s.hard and s.token_cap is not None and used_t + res_t + tokens > s.token_cap:
            return _monthly_error(s, QuotaExceeded.LIMIT_MONTHLY_TOKENS, s.token_cap, used_t, month_reset, now)
        if s.hard and s.cost_cap is not None and used_c + res_c + cost > s.cost_cap:
            return _monthly_error(s, QuotaExceeded.LIMIT_MONTHLY_COST, s.cost_cap, used_c, month_reset, now)
        same_window = window is not None and window == db_minute
        minute_reset = (db_minute or now.replace(second=0, microsecond=0)) + timedelta(minutes=1)
        if s.rpm is not None and (w_req if same_window else 0) + 1 > s.rpm:
            return _rate_error(QuotaExceeded.LIMIT_REQUESTS_PER_MINUTE, s.rpm, w_req, minute_reset, now)
        if s.tpm is not None and (w_tok if same_window else 0) + tokens > s.tpm:
            return _rate_error(QuotaExceeded.LIMIT_TOKENS_PER_MINUTE, s.tpm, w_tok, minute_reset, now,
                               too_big=tokens > s.tpm)
    if fallback:
        return QuotaExceeded(_("The usage limit is busy; try again in a moment."), limit="contention",
                             reset_at=now + timedelta(seconds=1), retry_after_s=1)
    return None


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def _monthly_error(s: SubjectLimits, limit: str, value, used, reset_at: datetime, now: datetime) -> QuotaExceeded:
    when = formats.date_format(reset_at, "DATE_FORMAT")
    if limit == QuotaExceeded.LIMIT_MONTHLY_TOKENS:
        amount = _("%(limit)s tokens") % {"limit": formats.number_format(value, force_grouping=True)}
    else:
        amount = f"${value}"
    if s.kind == Subject.API_KEY:
        message = _("This API key has reached its monthly cap of %(amount)s. It resets on %(date)s.")
    elif s.kind == Subject.USER:
        message = _("You have reached your monthly cap of %(amount)s. It resets on %(date)s.")
    elif limit == QuotaExceeded.LIMIT_MONTHLY_TOKENS:
        message = _("Your team has used its monthly allowance of %(amount)s. It resets on %(date)s.")
    else:
        message = _("Your team has reached its monthly budget of %(amount)s. It resets on %(date)s.")
    return QuotaExceeded(message % {"amount": amount, "date": when}, limit=limit, reset_at=reset_at,
                         retry_after_s=_seconds_until(reset_at, now), scope=s.kind, limit_value=value, used=used)


def _rate_error(limit: str, value, used, reset_at: datetime, now: datetime, too_big: bool = False) -> QuotaExceeded:
    if too_big:
        message = _("This request could use more tokens than the plan allows per minute (%(limit)s).")
    elif limit == QuotaExceeded.LIMIT_REQUESTS_PER_MINUTE:
        message = _("Too many requests: your plan allows %(limit)s per minute. Try again in %(seconds)s s.")
    else:
        message = _("Too many tokens: your plan allows %(limit)s per minute. Try again in %(seconds)s s.")
    seconds = _seconds_until(reset_at, now)
    return QuotaExceeded(message % {"limit": formats.number_format(value, force_grouping=True), "seconds": seconds},
                         limit=limit, reset_at=reset_at, retry_after_s=seconds, scope=Subject.TENANT,
                         limit_value=value, used=used)


# ---------------------------------------------------------------- counters: settle, release, expire

# How a delta row lands on a counter; shared with the ledger insert in services.usage_record.
COUNTER_DELTA_UPSERT = """
ON CONFLICT ON CONSTRAINT billing_counter_key DO UPDATE SET
  used_tokens = c.used_tokens + EXCLUDED.used_tokens,
  used_cost = c.used_cost + EXCLUDED.used_cost,
  reserved_tokens = GREATEST(c.reserved_tokens + EXCLUDED.reserved_tokens, 0),
  reserved_cost = GREATEST(c.reserved_cost + EXCLUDED.reserved_cost, 0),
  window_tokens = CASE WHEN EXCLUDED.window_start IS NOT NULL AND c.window_start = EXCLUDED.window_start
                       THEN GREATEST(c.window_tokens + EXCLUDED.window_tokens, 0) ELSE c.window_tokens END
RETURNING c.id, c.kind, c.period_start, c.used_tokens, c.used_cost, c.notified_pct
"""
_DELTA_SQL = """
INSERT INTO billing_quotacounter AS c
  (tenant_id, kind, subject_id, period_start, used_tokens, used_cost, reserved_tokens, reserved_cost,
   window_start, window_tokens, window_requests, notified_pct, hard)
SELECT %s, v.kind, v.subject_id, v.period_start, v.du, v.dc, v.rt, v.rc, v.ws, v.wt, 0, 0, false
FROM (VALUES {values}) AS v(kind, subject_id, period_start, du, dc, rt, rc, ws, wt)
{upsert}
"""
_DELTA_ROW = "(%s::text, %s::bigint, %s::date, %s::bigint, %s::numeric, %s::bigint, %s::numeric, %s::timestamptz, %s::bigint)"


@dataclass
class Claimed:
    """A reservation taken back from the open state (by settle, release or expiry)."""

    tokens: int
    cost: Decimal
    period_start: date
    window_start: datetime | None
    api_key_id: int | None
    user_id: int | None


def apply_deltas(*, tenant_id: int, used: dict | None, claimed: Claimed | None) -> list[tuple]:
    """Add actual usage to the subjects' counters and give back a claimed reservation, in one statement.

    `used`: {"period_start", "tokens", "cost", "api_key_id", "user_id"} or None. Rows are written in one fixed
    order (period, team, key, user), the same as reservations take them, so concurrent writers never deadlock.
    """
    deltas: dict[tuple, list] = {}

    def add(kind, subject_id, period, du=0, dc=Decimal(0), rt=0, rc=Decimal(0), ws=None, wt=0):
        row = deltas.setdefault((period, KIND_ORDER[kind], subject_id, kind), [0, Decimal(0), 0, Decimal(0), None, 0])
        row[0] += du
        row[1] += dc
        row[2] += rt
        row[3] += rc
        row[4] = ws or row[4]
        row[5] += wt

    actual_tokens = used["tokens"] if used else 0
    if used:
        for kind, sid in ((Subject.TENANT, 0), (Subject.API_KEY, used.get("api_key_id")),
                          (Subject.USER, used.get("user_id"))):
            if sid is not None:
                add(kind, sid, used["period_start"], du=used["tokens"], dc=used["cost"])
    if claimed:
        add(Subject.TENANT, 0, claimed.period_start, rt=-claimed.tokens, rc=-claimed.cost,
            ws=claimed.window_start, wt=actual_tokens - claimed.tokens)
        for kind, sid in ((Subject.API_KEY, claimed.api_key_id), (Subject.USER, claimed.user_id)):
            if sid is not None:
                add(kind, sid, claimed.period_start, rt=-claimed.tokens, rc=-claimed.cost)
    if not deltas:
        return []
    params: list = [tenant_id]
    for (period, _rank, sid, kind) in sorted(deltas):
        du, dc, rt, rc, ws, wt = deltas[(period, _rank, sid, kind)]
        params += [kind, sid, period, du, dc, rt, rc, ws, wt]
    sql = _DELTA_SQL.format(values=", ".join([_DELTA_ROW] * len(deltas)), upsert=COUNTER_DELTA_UPSERT)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_CLAIM_SQL = """
UPDATE billing_quotareservation SET state = %s
WHERE id = %s AND state = 'open'
RETURNING tokens, cost, period_start, window_start, api_key_id, user_id, tenant_id
"""


def claim(reservation_id, *, state: str) -> tuple[Claimed, int] | None:
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [state, reservation_id])
        row = cursor.fetchone()
    if row is None:
        return None
    return Claimed(*row[:6]), row[6]


def release(*, reservation: Reservation, state: str = QuotaReservation.State.RELEASED) -> bool:
    if reservation is None or reservation.id is None:
        return False
    with transaction.atomic():
        got = claim(reservation.id, state=state)
        if got is None:
            return False
        claimed, tenant_id = got
        apply_deltas(tenant_id=tenant_id, used=None, claimed=claimed)
    return True


def reservations_expire(*, tenant=None, now: datetime | None = None, batch: int = 500) -> int:
    """Give back reservations whose call never settled (the process died). Returns how many."""
    now = now or timezone.now()
    qs = QuotaReservation.objects.filter(state=QuotaReservation.State.OPEN, expires_at__lt=now)
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    expired = 0
    for reservation_id in qs.values_list("id", flat=True)[:batch]:
        with transaction.atomic():
            got = claim(reservation_id, state=QuotaReservation.State.EXPIRED)
            if got is not None:
                apply_deltas(tenant_id=got[1], used=None, claimed=got[0])
                expired += 1
    return expired
