"""The gateway's one request/response model, shared by every caller (chat, knowledge, billing).

Callers build a ChatRequest, name a target ("<pool or provider>/<model>", e.g. "local/llama3.2" or
"openai/gpt-4o-mini") and say what the call is for in a UsageContext, which the gateway passes to billing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accounts.errors import AppError
from billing.types import Usage, UsageContext  # noqa: F401  (re-exported: billing owns them)


class LLMError(AppError):
    """Base of gateway errors; `message` is safe to show to the caller."""

    code, status = "upstream_error", 502

    def __init__(self, message: str, *, retryable: bool = False, fields: dict | None = None):
        super().__init__(message, fields=fields)
        self.retryable = retryable


class ModelUnavailable(LLMError):
    """Every server (and fallback) for the target failed or is cooling down."""

    code, status = "model_unavailable", 503


class PolicyViolation(LLMError):
    """The tenant's data policy forbids the provider (e.g. local models only)."""

    code, status = "policy_violation", 403


class StreamInterrupted(LLMError):
    """The server failed after the first token: the partial text stands, the stream ends with this."""


class InvalidParams(LLMError):
    """A request parameter is out of range; `fields` maps each bad field to a message."""

    code, status = "invalid_params", 400


class ContextOverflow(InvalidParams):
    """The provider refused the prompt as longer than the model's context window, before any token.

    A client error: it never counts against the server's health. `context_window` is the provider's real window
    when its message says so (e.g. llama.cpp's n_ctx), `prompt_tokens` the prompt size it counted; either may be
    None. Callers shrink the prompt (chat.prompting.overflow_retry_window) and ask once more.
    """

    def __init__(self, message: str, *, context_window: int | None = None, prompt_tokens: int | None = None):
        super().__init__(message, fields={"messages": message})
        self.context_window = context_window
        self.prompt_tokens = prompt_tokens


# Accepted ranges, validated once here and then mapped per provider (forms and serializers may reuse them).
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "top_k": (1, 1000),
    "max_tokens": (1, 200_000),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "repeat_penalty": (0.0, 2.0),
    "seed": (0, 2**63 - 1),
    "num_ctx": (256, 2_097_152),
}
INTEGER_PARAMS = {"top_k", "max_tokens", "seed", "num_ctx"}
MAX_STOP_SEQUENCES = 4


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

    def set_params(self) -> dict[str, Any]:
        """The parameters the caller set (not None), by name."""
        return {name: value for name, value in self.__dict__.items() if value is not None}

    def errors(self) -> dict[str, str]:
        errors: dict[str, str] = {}
        for name, value in self.set_params().items():
            if name == "stop":
                if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
                    errors[name] = "stop must be a list of non-empty strings"
                elif len(value) > MAX_STOP_SEQUENCES:
                    errors[name] = f"at most {MAX_STOP_SEQUENCES} stop sequences"
                continue
            low, high = PARAM_RANGES[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                errors[name] = f"{name} must be a number"
            elif name in INTEGER_PARAMS and not isinstance(value, int):
                errors[name] = f"{name} must be a whole number"
            elif not low <= value <= high:
                errors[name] = f"{name} must be between {low:g} and {high:g}"
        return errors

    def validate(self) -> None:
        errors = self.errors()
        if errors:
            raise InvalidParams("; ".join(errors.values()), fields=errors)


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": "..."}]
    params: GenerationParams = field(default_factory=GenerationParams)
    json_schema: dict[str, Any] | None = None
    keep_alive: str | None = None

    def validate(self) -> None:
        """Raise InvalidParams (400) for a malformed request; the gateway calls this once per call."""
        errors = self.params.errors()
        roles = {"system", "user", "assistant"}
        if not self.messages:
            errors["messages"] = "at least one message is required"
        elif not all(
            isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str) for m in self.messages
        ):
            errors["messages"] = "each message needs a role (system, user or assistant) and text content"
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            errors["json_schema"] = "json_schema must be a JSON object"
        if errors:
            raise InvalidParams("; ".join(errors.values()), fields=errors)


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
    target: str = ""  # the target that answered ("<pool>/<model>")
    attempts: int = 1  # provider calls made (retries on other servers included)
    is_local: bool = False  # answered by a self-hosted server


@dataclass
class EmbedResult:
    vectors: list[list[float]]
    usage: Usage
    provider: str = ""
    model: str = ""
    server: str = ""
    target: str = ""
    is_local: bool = False
    duration_ms: float = 0.0
