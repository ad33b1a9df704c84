from datetime import datetime


class QuotaExceeded(Exception):
    """A plan, key or user limit would be passed by this call. Nothing was sent to a model."""

    status_code = 429

    def __init__(self, message: str, *, limit: str, reset_at: datetime | None = None,
                 retry_after_s: int | None = None):
        super().__init__(message)
        self.message = message
        self.limit = limit
        self.reset_at = reset_at
        self.retry_after_s = retry_after_s
