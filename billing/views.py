import csv
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts import selectors as account_selectors
from accounts.decorators import tenant_admin_required
from billing import charts, quota, selectors, services
from billing.invoicing import statement_build, statement_csv_rows
from billing.models import QuotaCounter, Subject, UsageCap
from billing.periods import Period, parse_period, recent_months

CSV_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """Keep spreadsheet apps from running a cell as a formula (names come from users)."""
    if isinstance(value, str) and value.startswith(CSV_DANGEROUS):
        return "'" + value
    return value


class _Echo:
    def write(self, value):
        return value


def csv_response(rows, filename: str, *, stream: bool = False):
    writer = csv.writer(_Echo())
    lines = (writer.writerow([csv_safe(v) for v in row]) for row in rows)
    if stream:
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    else:
        response = HttpResponse("".join(lines), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _period_from_request(request) -> tuple[Period, str | None]:
    start, end = request.GET.get("start"), request.GET.get("end")
    raw = f"{start}..{end}" if start and end else request.GET.get("period")
    try:
        return parse_period(raw), None
    except ValueError as exc:
        return parse_period("current"), str(exc)


def _metric(request, summary) -> str:
    wanted = request.GET.get("metric")
    if wanted in charts.METRICS:
        return wanted
    return "cost" if summary.totals.cost > 0 else "tokens"


@tenant_admin_required
def usage_page(request):
    period, error = _period_from_request(request)
    if error:
        messages.error(request, error)
    summary = selectors.usage_summary(tenant=request.tenant, period=period)
    metric = _metric(request, summary)
    metric_label = _("Cost (USD)") if metric == "cost" else _("Tokens")
    context = {
        "period": period,
        "summary": summary,
        "metric": metric,
        "metric_label": metric_label,
        "months": recent_months(),
        "allowance": _allowance(request),
        "day_chart": charts.column_chart(summary.by_day, metric=metric, chart_id="chart-days",
                                         title=_("%(metric)s by day") % {"metric": metric_label}),
        "breakdowns": [
            ("model", _("By model"), charts.bar_rows(summary.by_model, metric=metric)),
            ("stage", _("By stage"), charts.bar_rows(summary.by_stage, metric=metric)),
            ("assistant", _("By assistant"), charts.bar_rows(summary.by_assistant, metric=metric)),
            ("api_key", _("By API key"), charts.bar_rows(summary.by_api_key, metric=metric)),
        ],
        "query": _query(period, metric),
    }
    return render(request, "billing/usage.html", context)


def _allowance(request):
    request.billing_allowance = selectors.allowance_status(tenant=request.tenant)  # the banner reuses it
    return request.billing_allowance


def _query(period: Period, metric: str | None = None) -> str:
    params = {"period": period.key}
    if metric:
        params["metric"] = metric
    return urlencode(params)


EXPORT_DAILY_HEADER = ["day", "dimension", "key", "label", "price_version", "calls", "estimated_calls",
                       "input_tokens", "cached_input_tokens", "output_tokens", "total_tokens", "cost_usd"]
EXPORT_RECORD_HEADER = ["created_at", "id", "stage", "provider", "model", "server", "fallback_from", "user_id",
                        "api_key_id", "assistant_id", "conversation_id", "message_id", "document_id",
                        "input_tokens", "cached_input_tokens", "output_tokens", "estimated", "latency_ms",
                        "price_version", "cost_usd", "idempotency_key"]


@tenant_admin_required
def usage_export(request):
    period, error = _period_from_request(request)
    if error:
        return HttpResponse(error, status=400, content_type="text/plain; charset=utf-8")
    tenant = request.tenant
    if request.GET.get("detail") == "records":
        def records():
            yield EXPORT_RECORD_HEADER
            for r in selectors.usage_record_rows(tenant=tenant, period=period):
                yield [r.created_at.isoformat(), r.pk, r.stage, r.provider, r.model, r.server, r.fallback_from,
                       r.user_id, r.api_key_id, r.assistant_id, r.conversation_id, r.message_id, r.document_id,
                       r.input_tokens, r.cached_input_tokens, r.output_tokens, r.estimated, r.latency_ms,
                       r.price_id or "", f"{r.cost:f}", r.idempotency_key]

        return csv_response(records(), f"usage-records-{tenant.slug}-{period.key}.csv", stream=True)

    def daily():
        yield EXPORT_DAILY_HEADER
        for r in selectors.usage_daily_rows(tenant=tenant, period=period):
            yield [r["day"].isoformat(), r["dimension"], "" if r["key"] is None else r["key"], r["label"],
                   r["price_version_id"] or "", r["calls"], r["estimated_calls"], r["input_tokens"],
                   r["cached_input_tokens"], r["output_tokens"], r["input_tokens"] + r["output_tokens"],
                   f"{r['cost']:f}"]

    return csv_response(daily(), f"usage-{tenant.slug}-{period.key}.csv")


def _statement_period(request) -> tuple[Period, str | None]:
    raw = request.GET.get("month") or "current"
    try:
        period = parse_period(raw)
    except ValueError as exc:
        return parse_period("current"), str(exc)
    if not period.is_month:
        return parse_period("current"), _("A statement covers one calendar month (YYYY-MM).")
    return period, None


@tenant_admin_required
def statement(request):
    period, error = _statement_period(request)
    if error:
        messages.error(request, error)
    context = {"statement": statement_build(tenant=request.tenant, period=period), "months": recent_months(),
               "period": period}
    return render(request, "billing/statement.html", context)


@tenant_admin_required
def statement_csv(request):
    period, error = _statement_period(request)
    if error:
        return HttpResponse(error, status=400, content_type="text/plain; charset=utf-8")
    built = statement_build(tenant=request.tenant, period=period)
    return csv_response(statement_csv_rows(built), f"statement-{built.number}.csv")


def _parse_cap(raw: str, *, integer: bool):
    raw = (raw or "").strip().replace(",", "")
    if not raw:
        return None
    try:
        value = int(raw) if integer else Decimal(raw)
    except (ValueError, InvalidOperation) as exc:
        raise ValidationError(_("%(value)s is not a number.") % {"value": raw[:20]}) from exc
    if value < 0 or (not integer and not value.is_finite()):
        raise ValidationError(_("A cap cannot be negative."))
    if not integer and value >= Decimal("1e10"):
        raise ValidationError(_("That cap is too large."))
    if integer and value >= 2**62:
        raise ValidationError(_("That cap is too large."))
    return value


@tenant_admin_required
def limits(request):
    tenant = request.tenant
    keys = list(account_selectors.api_key_list(tenant=tenant))
    members = list(account_selectors.membership_list(tenant=tenant))
    caps = {(c.kind, c.subject_id): c for c in UsageCap.objects.filter(tenant=tenant)}
    if request.method == "POST":
        subjects = [(Subject.API_KEY, k.pk) for k in keys] + [(Subject.USER, m.user_id) for m in members]
        errors = []
        for kind, subject_id in subjects:
            prefix = f"{kind}-{subject_id}"
            if f"{prefix}-tokens" not in request.POST and f"{prefix}-cost" not in request.POST:
                continue
            try:
                tokens = _parse_cap(request.POST.get(f"{prefix}-tokens", ""), integer=True)
                cost = _parse_cap(request.POST.get(f"{prefix}-cost", ""), integer=False)
                services.usage_cap_set(tenant=tenant, kind=kind, subject_id=subject_id,
                                       monthly_token_limit=tokens, monthly_cost_limit=cost)
            except ValidationError as exc:
                errors.append(" ".join(exc.messages))
        if errors:
            for error in dict.fromkeys(errors):
                messages.error(request, error)
        else:
            messages.success(request, _("Caps saved."))
        return redirect("billing:limits")
    start = quota.period_start(timezone.now())
    used = {(c.kind, c.subject_id): c for c in QuotaCounter.objects.filter(tenant=tenant, period_start=start)}
    key_rows = [(k, caps.get((Subject.API_KEY, k.pk)), used.get((Subject.API_KEY, k.pk))) for k in keys]
    member_rows = [(m, caps.get((Subject.USER, m.user_id)), used.get((Subject.USER, m.user_id))) for m in members]
    context = {"allowance": _allowance(request), "key_rows": key_rows,
               "member_rows": member_rows}
    return render(request, "billing/limits.html", context)
