"""The gateway's one request/response model, shared by every caller (chat, knowledge, billing).

Callers build a ChatRequest, name a target ("<pool or provider>/<model>", e.g. "local/llama3.2" or
"openai/gpt-4o-mini") and say what the call is for in a UsageContext, which the gateway passes to billing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billing.types import Usage, UsageContext  # noqa: F401  (re-exported: billing owns them)


class LLMError(Exception):
    """Base of gateway errors; `message` is safe to show to the caller."""

    status_code = 502

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class ModelUnavailable(LLMError):
    """Every server (and fallback) for the target failed or is cooling down."""

    status_code = 503


class PolicyViolation(LLMError):
    """The tenant's data policy forbids the provider (e.g. local models only)."""

    status_code = 403


class StreamInterrupted(LLMError):
    """The server failed after the first token: the partial text stands, the stream ends with this."""


@dataclass
class GenerationParams:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    num_ctx: int | None = None


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": "..."}]
    params: GenerationParams = field(default_factory=GenerationParams)
    json_schema: dict[str, Any] | None = None
    keep_alive: str | None = None


@dataclass
class ChatResult:
    text: str
    usage: Usage
    provider: str = ""
    model: str = ""
    server: str = ""
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    finish_reason: str = ""
    ignored_params: list[str] = field(default_factory=list)  # e.g. ["top_k"] on OpenAI
    fallback_from: str = ""  # the target that failed when a fallback answered


@dataclass
class EmbedResult:
    vectors: list[list[float]]
    usage: Usage
    provider: str = ""
    model: str = ""
    server: str = ""
