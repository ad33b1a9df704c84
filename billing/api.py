"""GET /api/v1/usage. (A QuotaExceeded raised under any API view becomes its 429 in accounts.api_errors.)"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors
from billing.periods import parse_period
from billing.selectors import decimal_str

_METRICS = {
    "calls": serializers.IntegerField(),
    "estimated_calls": serializers.IntegerField(),
    "input_tokens": serializers.IntegerField(),
    "cached_input_tokens": serializers.IntegerField(),
    "output_tokens": serializers.IntegerField(),
    "total_tokens": serializers.IntegerField(),
    "cost": serializers.CharField(help_text="USD, decimal string"),
}


class UsageQuerySerializer(serializers.Serializer):
    period = serializers.CharField(required=False, default="current",
                                   help_text="current | previous | last_7_days | last_30_days | YYYY-MM | "
                                             "YYYY-MM-DD..YYYY-MM-DD (UTC days, inclusive)")
    group_by = serializers.ChoiceField(choices=selectors.GROUP_BY, required=False, default="day")

    def validate_period(self, value):
        try:
            return parse_period(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc


USAGE_RESPONSE = inline_serializer("UsageReport", {
    "period": inline_serializer("UsagePeriod", {"key": serializers.CharField(), "start": serializers.DateField(),
                                                "end": serializers.DateField()}),
    "currency": serializers.CharField(),
    "group_by": serializers.CharField(),
    "totals": inline_serializer("UsageTotals", dict(_METRICS)),
    "results": inline_serializer("UsageRow", {"key": serializers.CharField(allow_null=True),
                                              "label": serializers.CharField(), **_METRICS}, many=True),
    "allowance": inline_serializer("UsageAllowance", {
        "plan": serializers.CharField(), "enforcement": serializers.CharField(),
        "period_start": serializers.DateField(), "reset_at": serializers.DateTimeField(),
        "tokens_used": serializers.IntegerField(), "tokens_limit": serializers.IntegerField(allow_null=True),
        "tokens_remaining": serializers.IntegerField(allow_null=True), "cost_used": serializers.CharField(),
        "cost_limit": serializers.CharField(allow_null=True), "cost_remaining": serializers.CharField(allow_null=True),
    }),
})


class UsageView(APIView):
    """The tenant's metered usage: totals for a period and one breakdown, plus this month's allowance."""

    required_scopes = {"GET": "admin"}

    @extend_schema(
        summary="Usage and cost for a period, grouped",
        parameters=[
            OpenApiParameter("period", OpenApiTypes.STR, description="current (default), previous, last_7_days, "
                             "last_30_days, YYYY-MM or YYYY-MM-DD..YYYY-MM-DD"),
            OpenApiParameter("group_by", OpenApiTypes.STR, enum=list(selectors.GROUP_BY),
                             description="day (default), model, provider, stage, assistant, api_key, conversation"),
        ],
        responses={200: USAGE_RESPONSE},
    )
    def get(self, request):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        period, group_by = query.validated_data["period"], query.validated_data["group_by"]
        totals, rows = selectors.usage_grouped(tenant=request.tenant, period=period, group_by=group_by)
        key_id = getattr(getattr(request, "api_key", None), "pk", None)
        a = selectors.allowance_status(tenant=request.tenant, api_key_id=key_id)
        return Response({
            "period": {"key": period.key, "start": period.start, "end": period.end},
            "currency": "USD",
            "group_by": group_by,
            "totals": totals.as_dict(),
            "results": [{"key": None if r.key is None else str(r.key), "label": r.label, **r.metrics.as_dict()}
                        for r in rows],
            "allowance": {
                "plan": a.plan_name, "enforcement": "hard" if a.hard else "soft",
                "period_start": a.period_start, "reset_at": a.reset_at,
                "tokens_used": a.used_tokens, "tokens_limit": a.token_cap, "tokens_remaining": a.tokens_remaining,
                "cost_used": decimal_str(a.used_cost),
                "cost_limit": None if a.cost_cap is None else decimal_str(a.cost_cap),
                "cost_remaining": None if a.cost_remaining is None else decimal_str(a.cost_remaining),
            },
        })
