import hmac

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from accounts.models import ApiKey
from accounts.tenancy import set_scope, system_scope


class ApiKeyPrincipal:
    """request.user for API-key requests: the key acts for its tenant, not for a person."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key
        self.tenant = api_key.tenant
        self.pk = None

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"


def parse_key(raw: str) -> str | None:
    """Return the lookup prefix of a well-formed key, else None."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != ApiKey.PREFIX or not parts[1] or len(parts[2]) < 20:
        return None
    return parts[1]


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        if not header:
            return None
        kind, _sep, raw = header.partition(" ")
        if kind != self.keyword or not raw.strip():
            raise exceptions.AuthenticationFailed(_("Use 'Authorization: Bearer <api key>'."))
        raw = raw.strip()
        prefix = parse_key(raw)
        if prefix is None:
            raise exceptions.AuthenticationFailed(_("Malformed API key."))
        with system_scope():
            key = ApiKey.all_tenants.select_related("tenant").filter(prefix=prefix).first()
        if key is None or not hmac.compare_digest(key.key_hash, ApiKey.hash_secret(raw)):
            raise exceptions.AuthenticationFailed(_("Invalid API key."))
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed(_("This API key has been revoked."))
        if key.expires_at is not None and key.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed(_("This API key has expired."))
        # The request middleware resets the scope when the response is done.
        set_scope(key.tenant)
        now = timezone.now()
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            ApiKey.all_tenants.filter(pk=key.pk).update(last_used_at=now)  # throttled: one write a minute
            key.last_used_at = now
        request.tenant = key.tenant
        request.api_key = key
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request):
        return self.keyword
