from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.decorators import tenant_admin_required
from llm import selectors, services
from llm.forms import TenantProviderForm


def _staff_only(view):
    @login_required
    def wrapper(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


@_staff_only
def status(request):
    """Staff: every pool and server (healthy / cooling down / in flight / models / latency / errors)."""
    context = {"pools": selectors.pool_status(), "summary": selectors.runtime_summary()}
    template = "llm/_status_pools.html" if request.headers.get("HX-Request") else "llm/status.html"
    return render(request, template, context)


@_staff_only
@require_POST
def status_check(request):
    report = services.health_check_all()
    failed = [line for line in report if line["error"]]
    if failed:
        for line in failed:
            messages.error(request, f"{line['pool']}/{line['server']}: {line['error']}")
    else:
        messages.success(request, _("All %(count)d servers answered.") % {"count": len(report)})
    return redirect("llm:status")


@tenant_admin_required
def providers(request):
    """Tenant admins: bring your own OpenAI-compatible provider and key."""
    form = TenantProviderForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            provider = services.tenant_provider_create(tenant=request.tenant, created_by=request.user,
                                                       **form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                for error in errors:
                    form.add_error(field if field in form.fields else None, error)
        else:
            messages.success(request, _("Provider “%(name)s” added. Its key is stored encrypted.") %
                             {"name": provider.name})
            return redirect("llm:providers")
    return render(request, "llm/providers.html", {
        "form": form, "providers": selectors.tenant_provider_list(tenant=request.tenant),
    })


@tenant_admin_required
@require_POST
def provider_delete(request, provider_id: int):
    provider = selectors.tenant_provider_get(tenant=request.tenant, provider_id=provider_id)
    services.tenant_provider_delete(tenant=request.tenant, provider=provider)
    messages.success(request, _("Provider “%(name)s” removed.") % {"name": provider.name})
    return redirect("llm:providers")


@tenant_admin_required
@require_POST
def provider_test(request, provider_id: int):
    provider = selectors.tenant_provider_get(tenant=request.tenant, provider_id=provider_id)
    ok, message = services.tenant_provider_test(tenant=request.tenant, provider=provider)
    (messages.success if ok else messages.error)(request, f"{provider.name}: {message}")
    return redirect("llm:providers")
