from __future__ import annotations

from datetime import datetime


class QuotaExceeded(Exception):
    """A plan, key or user limit would be passed by this call. Nothing was sent to a model.

    `limit` names the limit (see LIMIT_* below), `reset_at` is when it frees up again and `retry_after_s` the
    seconds until then, so an API can answer 429 with Retry-After (billing.api.quota_exceeded_response).
    `message` is a translated sentence fit for the UI.
    """

    status_code = 429

    LIMIT_MONTHLY_TOKENS = "monthly_tokens"
    LIMIT_MONTHLY_COST = "monthly_cost"
    LIMIT_REQUESTS_PER_MINUTE = "requests_per_minute"
    LIMIT_TOKENS_PER_MINUTE = "tokens_per_minute"

    def __init__(self, message: str, *, limit: str, reset_at: datetime | None = None,
                 retry_after_s: int | None = None, scope: str = "tenant", limit_value=None, used=None):
        super().__init__(message)
        self.message = message
        self.limit = limit
        self.reset_at = reset_at
        self.retry_after_s = retry_after_s
        self.scope = scope  # "tenant" (the plan), "api_key" or "user" (caps set by tenant admins)
        self.limit_value = limit_value
        self.used = used

    def as_dict(self) -> dict:
        return {
            "limit": str(self.limit),
            "scope": str(self.scope),
            "limit_value": None if self.limit_value is None else str(self.limit_value),
            "used": None if self.used is None else str(self.used),
            "reset_at": self.reset_at.isoformat() if self.reset_at else None,
            "retry_after_s": self.retry_after_s,
        }
