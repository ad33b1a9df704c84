"""Sign-in throttling on django-axes: a limit per account and a (higher) limit per client address.

Axes counts failures per lockout parameter (settings.AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]) and
compares the larger count with one limit. An office behind one address must not be locked out by a few typos of
its many people, so the address's count is scaled to the account limit before that comparison.
"""

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.db.models import Sum


def login_username(request, credentials: dict | None) -> str | None:
    """The account an attempt is for, as stored (emails are kept lower-case): "Bob@X" and "bob@x" count together."""
    raw = (credentials or {}).get("username") or request.POST.get("username")
    return raw.strip().lower() if isinstance(raw, str) else None


class LoginThrottleHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials: dict | None = None) -> int:
        by_account, by_address = (
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        )
        per_account, per_address = settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS
        return max(by_account, by_address * per_account // per_address)
