import logging
import re
import uuid
from contextvars import ContextVar

from accounts.tenancy import SYSTEM, reset_scope, set_scope

_request_id: ContextVar[str] = ContextVar("request_id", default="-")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SESSION_TENANT_KEY = "tenant_id"


def current_request_id() -> str:
    return _request_id.get()


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class RequestIdMiddleware:
    """Adopt a caller's X-Request-ID (when sane) or make one; echo it in the response and in every log line."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = _request_id.set(rid)
        request.request_id = rid
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = rid
        return response


class TenantMiddleware:
    """Put the session's active tenant in scope for the request (API keys do it in their authenticator).

    Staff in the Django admin work across tenants, so /admin/ runs in the system scope.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Local: LOGGING loads this module (RequestIdLogFilter) before the app registry, so no models at the top.
        from accounts.selectors import membership_for_session

        request.tenant = None
        request.membership = None
        scope = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if request.path.startswith("/admin/") and user.is_staff:
                scope = SYSTEM
            else:
                membership = membership_for_session(user=user, tenant_id=request.session.get(SESSION_TENANT_KEY))
                if membership is not None:
                    request.membership = membership
                    request.tenant = membership.tenant
                    if request.session.get(SESSION_TENANT_KEY) != membership.tenant_id:
                        request.session[SESSION_TENANT_KEY] = membership.tenant_id
                    scope = membership.tenant
        token = set_scope(scope)
        try:
            return self.get_response(request)
        finally:
            reset_scope(token)
