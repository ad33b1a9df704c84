from __future__ import annotations

from datetime import datetime

from accounts.errors import AppError


class QuotaExceeded(AppError):
    """A plan, key or user limit would be passed by this call. Nothing was sent to a model.

    `limit` names the limit (see LIMIT_* below), `reset_at` is when it frees up again and `retry_after_s` the
    seconds until then: the API answers 429 with Retry-After and the error body carries `details()`.
    `message` is a translated sentence fit for the UI.
    """

    code, status = "quota_exceeded", 429

    LIMIT_MONTHLY_TOKENS = "monthly_tokens"
    LIMIT_MONTHLY_COST = "monthly_cost"
    LIMIT_REQUESTS_PER_MINUTE = "requests_per_minute"
    LIMIT_TOKENS_PER_MINUTE = "tokens_per_minute"

    def __init__(self, message: str, *, limit: str, reset_at: datetime | None = None,
                 retry_after_s: int | None = None, scope: str = "tenant", limit_value=None, used=None):
        super().__init__(message)
        self.limit = limit
        self.reset_at = reset_at
        self.retry_after_s = retry_after_s
        self.scope = scope  # "tenant" (the plan), "api_key" or "user" (caps set by tenant admins)
        self.limit_value = limit_value
        self.used = used

    @property
    def retry_after(self) -> int | None:
        return self.retry_after_s

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.reset_at is not None:
            headers["X-Usage-Reset"] = self.reset_at.isoformat()
        return headers

    def details(self) -> dict:
        return {
            "limit": str(self.limit),
            "scope": str(self.scope),
            "limit_value": None if self.limit_value is None else str(self.limit_value),
            "used": None if self.used is None else str(self.used),
            "reset_at": self.reset_at.isoformat() if self.reset_at else None,
            "retry_after_s": self.retry_after_s,
        }
