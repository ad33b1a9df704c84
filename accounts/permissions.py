from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import ApiKey, Role

# What a signed-in person's role allows when they call the API with their browser session.
ROLE_SCOPES = {
    Role.OWNER: {"read", "write", "chat", "admin"},
    Role.ADMIN: {"read", "write", "chat", "admin"},
    Role.MEMBER: {"read", "chat"},
}


def request_scopes(request) -> set[str]:
    key = getattr(request, "api_key", None)
    if key is not None:
        return set(ApiKey.Scope.values) if ApiKey.Scope.ADMIN in key.scopes else set(key.scopes)
    membership = getattr(request, "membership", None)
    return ROLE_SCOPES.get(membership.role, set()) if membership else set()


def request_actor(request) -> dict:
    """Who acts, as services and selectors take it (user=, api_key=): the signed-in person, None for an API
    key (its principal has no pk: it acts for the whole tenant), and the API key, None for a session."""
    return {"user": request.user if getattr(request.user, "pk", None) else None,
            "api_key": getattr(request, "api_key", None)}


class HasTenant(BasePermission):
    """Authenticated and acting for a tenant; also checks the scope the view asks for.

    A view names its scope per method in `required_scopes` (e.g. {"POST": "chat"}); unnamed methods need
    "read" when safe and "write" otherwise.
    """

    message = "Authentication with a tenant API key is required."

    def has_permission(self, request, view) -> bool:
        # request.user is set only by a DRF authenticator (API key, or session with CSRF checked), never by
        # the web middleware alone: a cross-site form post must not act with the visitor's cookie.
        if request.user is None or getattr(request, "tenant", None) is None:
            return False
        needed = getattr(view, "required_scopes", {}).get(request.method)
        if needed is None:
            needed = "read" if request.method in SAFE_METHODS else "write"
        if needed not in request_scopes(request):
            self.message = f"This API key lacks the '{needed}' scope."
            return False
        return True
