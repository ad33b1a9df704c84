"""What every provider adapter yields and raises."""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import dataclass, field

import httpx

from billing.types import Usage
from llm import netguard
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
    pool would fail the same way), context (the prompt is longer than the model's window: a client error).
    `server_fault` False means the request, not the server, was at fault: it never counts against the server.
    """

    def __init__(self, message: str, *, kind: str, status: int | None = None, retryable: bool = True,
                 server_fault: bool = True, context_window: int | None = None, prompt_tokens: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retryable = retryable
        self.server_fault = server_fault
        self.context_window = context_window
        self.prompt_tokens = prompt_tokens

    @classmethod
    def context(cls, detail: str, *, server: str, status: int | None = None, echo: bool = True) -> ProviderError:
        window, prompt = context_numbers(detail)
        said = f": {' '.join(detail.split())[:300]}" if echo else ""
        return cls(f"{server} refused the prompt as too long for the model's context window{said}", kind="context",
                   status=status, retryable=False, server_fault=False, context_window=window, prompt_tokens=prompt)

    @classmethod
    def from_status(cls, status: int, detail: str, *, server: str, echo: bool = True) -> ProviderError:
        """echo=False (tenant-configured servers): the upstream body decides the kind of error but is not quoted."""
        if 400 <= status < 600 and is_context_overflow(detail):
            # Some servers answer an overlong prompt with a 500; the words say whose fault it is.
            return cls.context(detail, server=server, status=status, echo=echo)
        said = f": {' '.join(detail.split())[:300]}" if echo else ""
        if status in (401, 403):
            return cls(f"{server} rejected the API key (HTTP {status})", kind="config", status=status,
                       retryable=False, server_fault=False)
        if status == 404:
            return cls(f"{server}: model or endpoint not found (HTTP 404){said}", kind="config", status=status,
                       retryable=True, server_fault=False)
        if status in (408, 409, 429, 503):
            return cls(f"{server} is busy (HTTP {status}){said}", kind="http", status=status, retryable=True,
                       server_fault=False)
        if 400 <= status < 500:
            return cls(f"{server} refused the request (HTTP {status}){said}", kind="config", status=status,
                       retryable=False, server_fault=False)
        return cls(f"{server} failed (HTTP {status}){said}", kind="http", status=status)


# How providers say "the prompt does not fit": llama-cpp-python ("Requested tokens (4787) exceed context window of
# 4096"), OpenAI and vLLM ("maximum context length is N tokens", code context_length_exceeded), llama.cpp's server
# and Ollama with truncate=false ("request (351 tokens) exceeds the available context size (256 tokens)",
# exceed_context_size_error), Ollama embeddings ("input length exceeds the context length").
_OVERFLOW = re.compile(
    r"exceeds? (?:the )?context window|context_length_exceeded|maximum context length|exceed_context_size_error"
    r"|exceeds? the available context size|input length exceeds (?:the )?(?:maximum )?context length"
    r"|prompt is too long|too many tokens in the prompt", re.I)
_WINDOW = (re.compile(r"context window of (\d+)", re.I), re.compile(r"maximum context length is (\d+)", re.I),
           re.compile(r"available context size \((\d+) tokens?\)", re.I), re.compile(r"\\?\"n_ctx\\?\"\s*:\s*(\d+)"))
_PROMPT = (re.compile(r"Requested tokens \((\d+)\)", re.I), re.compile(r"request \((\d+) tokens?\)", re.I),
           re.compile(r"\\?\"n_prompt_tokens\\?\"\s*:\s*(\d+)"), re.compile(r"\((\d+) in the messages", re.I))


def is_context_overflow(text: str) -> bool:
    return bool(text) and _OVERFLOW.search(text) is not None


def context_numbers(text: str) -> tuple[int | None, int | None]:
    """(context window, prompt tokens) as far as the provider's message states them."""

    def first(patterns) -> int | None:
        for pattern in patterns:
            match = pattern.search(text or "")
            if match:
                return int(match.group(1))
        return None

    return first(_WINDOW), first(_PROMPT)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building a context loads the CA bundle (tens of ms): once per process, not once per event loop.
    return httpx.create_ssl_context()


_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=200)


def http_client(server=None) -> httpx.AsyncClient:
    """This event loop's pooled HTTP client for `server` (timeouts are given per request). Servers a tenant
    configured (ServerSpec.guarded) get the client that reaches allowed addresses only (llm/netguard.py)."""
    if server is not None and server.guarded:
        return loop_resource(
            "httpx-guarded",
            lambda: httpx.AsyncClient(
                timeout=None, headers={"User-Agent": "ragdesk-llm-gateway"}, follow_redirects=False,
                transport=netguard.GuardedAsyncTransport(ssl_context=_ssl_context(), limits=_LIMITS),
            ),
        )
    return loop_resource(
        "httpx",
        lambda: httpx.AsyncClient(timeout=None, limits=_LIMITS, headers={"User-Agent": "ragdesk-llm-gateway"},
                                  verify=_ssl_context()),
    )


def guarded_sync_client(timeout: float) -> httpx.Client:
    """A short-lived sync client that reaches allowed addresses only (context-window discovery)."""
    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                        transport=netguard.GuardedSyncTransport(ssl_context=_ssl_context()))


def request_timeout(connect_s: float, *, read_s: float | None = None) -> httpx.Timeout:
    # Reads are bounded by the gateway's first-token / idle timeouts, which know which phase the stream is in.
    return httpx.Timeout(connect=connect_s, read=read_s, write=max(connect_s, 10.0), pool=max(connect_s, 10.0))


class AddressBlocked(ProviderError):
    """A tenant-configured server resolved to an address the operator has not allowed (llm/netguard.py)."""

    def __init__(self, server: str):
        super().__init__(f"{server}: {netguard.NOT_ALLOWED}", kind="config", retryable=False, server_fault=False)


def transport_error(exc: Exception, *, server: str, echo: bool = True) -> ProviderError:
    if netguard.is_not_allowed(exc):
        return AddressBlocked(server)
    if isinstance(exc, httpx.ConnectTimeout):
        return ProviderError(f"{server} did not accept a connection in time", kind="connect")
    if isinstance(exc, httpx.ConnectError):
        said = f": {exc or 'connection refused'}" if echo else ""
        return ProviderError(f"{server} is unreachable{said}", kind="connect")
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(f"{server} timed out", kind="timeout")
    return ProviderError(f"{server} dropped the connection: {type(exc).__name__}", kind="stream")
