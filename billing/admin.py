from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from billing.models import Plan, Price, QuotaCounter, Subscription, UsageCap, UsageRecord

PRICE_VALUE_FIELDS = [
    "input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "tier_threshold_tokens", "input_per_mtok_above",
    "cached_input_per_mtok_above", "output_per_mtok_above", "per_gpu_hour",
]


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    """Price versions. A version already in effect is read-only: add a new version (the "New version" link
    copies it) with a later effective-from date, so past ledger records keep the price they were charged."""

    list_display = ["model", "provider", "effective_from", "input_per_mtok", "cached_input_per_mtok",
                    "output_per_mtok", "tier_threshold_tokens", "per_gpu_hour", "new_version"]
    list_filter = ["provider"]
    search_fields = ["model", "provider"]
    ordering = ["provider", "model", "-effective_from"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.effective_from <= timezone.now():
            return ["provider", "model", "effective_from", *PRICE_VALUE_FIELDS]
        return []

    def has_delete_permission(self, request, obj=None):
        # Ledger records point at the versions they used (PROTECT); unused future versions may go.
        return obj is None or obj.effective_from > timezone.now()

    @admin.display(description=_("new version"))
    def new_version(self, obj):
        initial = {"provider": obj.provider, "model": obj.model, "note": obj.note}
        initial.update({f: getattr(obj, f) for f in PRICE_VALUE_FIELDS if getattr(obj, f) is not None})
        url = reverse("admin:billing_price_add") + "?" + urlencode(initial)
        return format_html('<a href="{}">{}</a>', url, _("New version"))


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "monthly_token_allowance", "monthly_cost_cap", "requests_per_minute",
                    "tokens_per_minute", "enforcement", "monthly_fee"]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["tenant", "plan", "started_at", "external_customer_id"]
    list_select_related = ["tenant", "plan"]
    raw_id_fields = ["tenant"]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "stage", "provider", "model", "input_tokens", "cached_input_tokens",
                    "output_tokens", "estimated", "cost", "price"]
    list_filter = ["stage", "provider", "estimated"]
    search_fields = ["model", "idempotency_key"]
    list_select_related = ["tenant", "price"]
    show_full_result_count = False  # counting millions of rows on every list page is slow


@admin.register(QuotaCounter)
class QuotaCounterAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "kind", "subject_id", "period_start", "used_tokens", "used_cost", "reserved_tokens",
                    "reserved_cost", "notified_pct"]
    list_filter = ["kind", "period_start"]


@admin.register(UsageCap)
class UsageCapAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "kind", "subject_id", "monthly_token_limit", "monthly_cost_limit", "updated_at"]
