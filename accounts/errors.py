"""The one base of errors a caller may be shown, modelled on Zulip's JsonableError.

An error class declares once what it means over HTTP: `code` (a machine string), `status` (the HTTP status)
and, per instance, a translated `message` safe to show, optional `fields` (each bad input with its messages)
and `retry_after` (seconds, sent as Retry-After). Services, selectors, the gateway and workers raise these; the
API's exception handler (accounts.api_errors) renders them, so API views never translate them. HTML views may
catch them to show `message` in a form, and the answer stream copies code/status into its `error` event.

No DRF here: everything below the views raises these, and accounts is the app every other app may import.
"""

from __future__ import annotations


class AppError(Exception):
    code: str = "invalid"
    status: int = 400
    retry_after: int | None = None

    def __init__(self, message: str, *, fields: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        if code is not None:
            self.code = code  # a finer reason than the class's, e.g. an upload's "empty"

    def headers(self) -> dict[str, str]:
        """Response headers that go with the error."""
        return {} if self.retry_after is None else {"Retry-After": str(int(self.retry_after))}

    def details(self) -> dict:
        """Members the error body carries beside code, message and fields (e.g. which quota limit)."""
        return {}
