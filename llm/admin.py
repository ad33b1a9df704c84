from django import forms
from django.contrib import admin, messages
from django.db import models
from django.utils.translation import gettext_lazy as _

from llm import registry
from llm.models import Pool, PoolServer, TenantProvider
from llm.services import health_check_all


class PoolServerForm(forms.ModelForm):
    base_url = forms.URLField(label=_("base URL"), max_length=300, assume_scheme="https",
                              help_text=PoolServer._meta.get_field("base_url").help_text)
    api_key = forms.CharField(
        label=_("API key"), required=False, widget=forms.PasswordInput(render_value=False),
        help_text=_("Stored encrypted; never shown again. Leave blank to keep the current key."),
    )
    clear_api_key = forms.BooleanField(label=_("remove the stored key"), required=False)

    class Meta:
        model = PoolServer
        fields = ["name", "base_url", "weight", "max_slots", "enabled"]

    def save(self, commit=True):
        server = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            server.set_api_key("")
        elif self.cleaned_data.get("api_key"):
            server.set_api_key(self.cleaned_data["api_key"])
        if commit:
            server.save()
        return server


URL_FIELD = {models.URLField: {"assume_scheme": "https"}}


class PoolServerInline(admin.TabularInline):
    model = PoolServer
    formfield_overrides = URL_FIELD
    form = PoolServerForm
    extra = 1
    fields = ["name", "base_url", "api_key", "clear_api_key", "api_key_hint", "weight", "max_slots", "enabled",
              "last_error", "last_checked_at"]
    readonly_fields = ["api_key_hint", "last_error", "last_checked_at"]


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "strategy", "is_local", "enabled", "server_count", "server_errors"]
    list_filter = ["kind", "enabled", "is_local"]
    inlines = [PoolServerInline]
    actions = ["check_now"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "dialect", "strategy", "is_local", "enabled", "models", "context_windows",
                           "provider_label", "description"]}),
        (_("Queue and timeouts"), {"fields": ["queue_timeout_s", "max_queue", "max_attempts", "connect_timeout_s",
                                              "first_token_timeout_s", "idle_timeout_s"]}),
    ]

    @admin.display(description=_("servers"))
    def server_count(self, pool):
        return pool.servers.count()

    @admin.display(description=_("last errors"))
    def server_errors(self, pool):
        return "; ".join(f"{s.name}: {s.last_error}" for s in pool.servers.all() if s.last_error) or "—"

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        registry.invalidate()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        registry.invalidate()

    @admin.action(description=_("Check the servers now"))
    def check_now(self, request, queryset):
        report = health_check_all(pool_names={p.name for p in queryset})
        for line in report:
            level = messages.ERROR if line["error"] else messages.SUCCESS
            self.message_user(request, f"{line['pool']}/{line['server']}: {line['error'] or _('healthy')}", level)


@admin.register(TenantProvider)
class TenantProviderAdmin(admin.ModelAdmin):
    formfield_overrides = URL_FIELD
    list_display = ["name", "tenant", "base_url", "api_key_hint", "self_hosted", "last_error", "created_at"]
    list_filter = ["tenant"]
    readonly_fields = ["api_key_hint", "last_error", "last_checked_at", "created_by"]
    fields = ["name", "base_url", "api_key_hint", "models", "self_hosted", "max_concurrency", "created_by",
              "last_error", "last_checked_at"]

    def has_add_permission(self, request):
        return False  # tenants add their own providers (with their key) in Settings
