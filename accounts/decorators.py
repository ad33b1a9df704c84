from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect


def tenant_required(view):
    """Signed in and acting for a tenant (request.tenant / request.membership are set)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if getattr(request, "tenant", None) is None:
            return redirect("accounts:no-tenant")
        return view(request, *args, **kwargs)

    return wrapper


def tenant_admin_required(view):
    @tenant_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.membership.is_admin:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper
