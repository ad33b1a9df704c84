"""What every provider adapter yields and raises."""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field

import httpx

from billing.types import Usage
from llm.state import loop_resource


@dataclass(slots=True)
class Delta:
    text: str


@dataclass(slots=True)
class Done:
    usage: Usage | None  # None when the server reported nothing
    finish_reason: str = "stop"


@dataclass
class ProbeResult:
    models: list[str] | None = None
    loaded: list[str] | None = None
    version: str = ""
    detail: dict = field(default_factory=dict)


class ProviderError(Exception):
    """A provider call failed.

    kind: connect (nothing answered: cool down at once), http (an error status), timeout, stream (the connection
    broke or the stream ended early), config (bad key, unknown model, rejected request: another server of the same
    pool would fail the same way).
    """

    def __init__(self, message: str, *, kind: str, status: int | None = None, retryable: bool = True,
                 server_fault: bool = True):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retryable = retryable
        self.server_fault = server_fault

    @classmethod
    def from_status(cls, status: int, detail: str, *, server: str) -> ProviderError:
        detail = " ".join(detail.split())[:300]
        if status in (401, 403):
            return cls(f"{server} rejected the API key (HTTP {status})", kind="config", status=status,
                       retryable=False, server_fault=False)
        if status == 404:
            return cls(f"{server}: model or endpoint not found (HTTP 404): {detail}", kind="config", status=status,
                       retryable=True, server_fault=False)
        if status in (408, 409, 429, 503):
            return cls(f"{server} is busy (HTTP {status}): {detail}", kind="http", status=status, retryable=True,
                       server_fault=False)
        if 400 <= status < 500:
            return cls(f"{server} refused the request (HTTP {status}): {detail}", kind="config", status=status,
                       retryable=False, server_fault=False)
        return cls(f"{server} failed (HTTP {status}): {detail}", kind="http", status=status)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building a context loads the CA bundle (tens of ms): once per process, not once per event loop.
    return httpx.create_ssl_context()


def http_client() -> httpx.AsyncClient:
    """This event loop's pooled HTTP client (timeouts are given per request)."""
    return loop_resource(
        "httpx",
        lambda: httpx.AsyncClient(
            timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
            headers={"User-Agent": "ragdesk-llm-gateway"}, verify=_ssl_context(),
        ),
    )


def request_timeout(connect_s: float, *, read_s: float | None = None) -> httpx.Timeout:
    # Reads are bounded by the gateway's first-token / idle timeouts, which know which phase the stream is in.
    return httpx.Timeout(connect=connect_s, read=read_s, write=max(connect_s, 10.0), pool=max(connect_s, 10.0))


def transport_error(exc: Exception, *, server: str) -> ProviderError:
    if isinstance(exc, httpx.ConnectTimeout):
        return ProviderError(f"{server} did not accept a connection in time", kind="connect")
    if isinstance(exc, httpx.ConnectError):
        return ProviderError(f"{server} is unreachable: {exc or 'connection refused'}", kind="connect")
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(f"{server} timed out", kind="timeout")
    return ProviderError(f"{server} dropped the connection: {type(exc).__name__}", kind="stream")
