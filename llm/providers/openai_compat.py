"""OpenAI and OpenAI-compatible servers through the official async `openai` client (configurable base_url).

Streams with stream_options.include_usage, reads cached-token counts, and maps parameters per dialect:
  openai    api.openai.com: max_completion_tokens; no top_k / repeat_penalty / num_ctx; reasoning models
            (o-series, gpt-5 except *-chat*) take no sampling parameters.
  llamacpp  llama-cpp-python's server: top_k and repeat_penalty as extra body fields; JSON output through
            response_format json_object + schema (it rejects json_schema).
  generic   any other OpenAI-compatible server: the standard parameters only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import openai

from billing.types import Usage
from llm.providers.base import (
    Delta,
    Done,
    ProbeResult,
    ProviderError,
    http_client,
    is_context_overflow,
    request_timeout,
    transport_error,
)
from llm.registry import ServerSpec
from llm.state import loop_resource
from llm.types import ChatRequest, GenerationParams

STANDARD = {"temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed", "stop"}
SAMPLING = {"temperature", "top_p", "presence_penalty", "frequency_penalty"}
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)(?!.*chat)")

# Servers found not to accept stream_options (older OpenAI-compatible servers): send it no more. Keyed by URL:
# another server may answer there after a restart or a configuration change.
_no_stream_options: set[str] = set()


def map_params(params: GenerationParams, *, dialect: str, model: str) -> tuple[dict, dict, list[str]]:
    """-> (standard keyword arguments, extra body fields, ignored parameter names)."""
    given = params.set_params()
    kwargs: dict = {}
    extra: dict = {}
    ignored: list[str] = []
    reasoning = dialect == "openai" and bool(REASONING_MODEL.match(model))
    for name, value in given.items():
        if name in STANDARD and not (reasoning and name in SAMPLING):
            if name == "max_tokens" and dialect == "openai":
                kwargs["max_completion_tokens"] = value
            else:
                kwargs[name] = value
        elif dialect == "llamacpp" and name in ("top_k", "repeat_penalty"):
            extra[name] = value
        else:
            ignored.append(name)
    return kwargs, extra, sorted(ignored)


def response_format(schema: dict, *, dialect: str) -> dict:
    if dialect == "llamacpp":
        return {"type": "json_object", "schema": schema}
    strict = schema.get("additionalProperties") is False
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": strict}}


def _client(server: ServerSpec, connect_timeout: float) -> openai.AsyncOpenAI:
    # Keyed by what the client connects with, never by the server's id: a server whose URL changed (the local
    # model server restarted on another port, an admin edit) must get a new client, not the old address.
    key = hashlib.sha256(server.api_key.encode()).hexdigest()[:16]
    return loop_resource(
        f"openai:{server.base_url}:{key}:{connect_timeout}:{server.guarded}",
        lambda: openai.AsyncOpenAI(
            base_url=server.base_url, api_key=server.api_key or "not-needed", max_retries=0,
            timeout=request_timeout(connect_timeout), http_client=http_client(server),
        ),
    )


def _error_text(body) -> str:
    """The message of an OpenAI-style error body ({"error": {...}} or the inner object), with its code and type."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return str(body or "")
    parts = [str(body.get(name)) for name in ("message", "code", "type") if body.get(name)]
    return " ".join(parts) or str(body)


def _as_provider_error(exc: Exception, *, server: ServerSpec) -> ProviderError:
    echo = not server.guarded  # a tenant's server: its words decide the kind of error, they are not quoted
    if isinstance(exc, openai.APIStatusError):
        detail = _error_text(exc.body)
        # Never echo what the server says about a rejected key: it may quote part of the key.
        if exc.status_code in (401, 403):
            detail = ""
        return ProviderError.from_status(exc.status_code, detail or exc.__class__.__name__, server=server.name,
                                         echo=echo)
    if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIConnectionError):
        # An error event inside a 200 stream (llama.cpp, vLLM): nothing was generated yet.
        detail = _error_text(exc.body) or exc.message
        if is_context_overflow(detail):
            return ProviderError.context(detail, server=server.name, echo=echo)
        said = f": {' '.join(detail.split())[:300]}" if echo else " sent an error instead of an answer"
        return ProviderError(f"{server.name}{said}", kind="stream")
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"{server.name} timed out", kind="timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if isinstance(cause, httpx.HTTPError):
            return transport_error(cause, server=server.name, echo=echo)
        return ProviderError(f"{server.name} is unreachable", kind="connect")
    if isinstance(exc, httpx.HTTPError):
        return transport_error(exc, server=server.name, echo=echo)
    return ProviderError(f"{server.name}: {type(exc).__name__}", kind="stream")


def _usage(raw) -> Usage | None:
    if raw is None:
        return None
    details = getattr(raw, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return Usage(input_tokens=int(raw.prompt_tokens or 0), cached_input_tokens=int(cached or 0),
                 output_tokens=int(raw.completion_tokens or 0))


async def stream_chat(server: ServerSpec, model: str, request: ChatRequest, *, dialect: str = "generic",
                      connect_timeout: float = 3.0) -> AsyncIterator[Delta | Done]:
    kwargs, extra, _ignored = map_params(request.params, dialect=dialect, model=model)
    if request.json_schema is not None:
        kwargs["response_format"] = response_format(request.json_schema, dialect=dialect)
    if server.base_url not in _no_stream_options:
        kwargs["stream_options"] = {"include_usage": True}
    client = _client(server, connect_timeout)
    try:
        try:
            stream = await client.chat.completions.create(model=model, messages=request.messages, stream=True,
                                                          extra_body=extra or None, **kwargs)
        except openai.BadRequestError as exc:
            if "stream_options" not in str(exc) or "stream_options" not in kwargs:
                raise
            _no_stream_options.add(server.base_url)
            kwargs.pop("stream_options")
            stream = await client.chat.completions.create(model=model, messages=request.messages, stream=True,
                                                          extra_body=extra or None, **kwargs)
        finish = ""
        usage = None
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices or ():
                    text = choice.delta.content if choice.delta is not None else None
                    if text:
                        yield Delta(text)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        if not finish and usage is None:
            raise ProviderError(f"{server.name} ended the stream before it was done", kind="stream")
        yield Done(usage, finish or "stop")
    except (openai.APIError, httpx.HTTPError) as exc:
        raise _as_provider_error(exc, server=server) from exc


async def embed(server: ServerSpec, model: str, texts: list[str], *, dimensions: int | None = None,
                connect_timeout: float = 3.0, timeout: float = 120.0) -> tuple[list[list[float]], Usage | None]:
    client = _client(server, connect_timeout)
    texts = [text if text.strip() else " " for text in texts]  # OpenAI rejects empty inputs
    try:
        response = await client.embeddings.create(model=model, input=texts, dimensions=dimensions or openai.omit,
                                                  timeout=request_timeout(connect_timeout, read_s=timeout))
    except (openai.APIError, httpx.HTTPError) as exc:
        raise _as_provider_error(exc, server=server) from exc
    vectors = [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
    if len(vectors) != len(texts):
        raise ProviderError(f"{server.name} returned {len(vectors)} embeddings for {len(texts)} texts", kind="stream")
    usage = Usage(input_tokens=int(response.usage.prompt_tokens)) if response.usage is not None else None
    return vectors, usage


def server_root(base_url: str) -> str:
    """The server's root: llama.cpp serves /health and /props beside /v1."""
    return base_url.rstrip("/").removesuffix("/v1")


async def _get_json(url: str, *, server: ServerSpec, timeout: float) -> tuple[int, dict | None]:
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    try:
        response = await http_client(server).get(url, headers=headers,
                                                 timeout=request_timeout(timeout, read_s=timeout))
    except httpx.HTTPError as exc:
        raise transport_error(exc, server=server.name, echo=not server.guarded) from exc
    try:
        data = response.json()
    except ValueError:
        data = None
    return response.status_code, data if isinstance(data, dict) else None


def props_context(props: dict | None) -> int | None:
    """n_ctx from llama.cpp's /props: per slot (default_generation_settings) when it says, else the server's."""
    if not props:
        return None
    for value in ((props.get("default_generation_settings") or {}).get("n_ctx"), props.get("n_ctx")):
        if isinstance(value, int) and value > 0:
            return value
    return None


async def probe(server: ServerSpec, *, timeout: float = 3.0, dialect: str = "generic") -> ProbeResult:
    """Is the server up, what does it serve. llama.cpp: /health and /props, which answer while every slot is
    generating (its /v1/models may wait for the model lock), then /v1/models if it answers in time."""
    detail: dict = {}
    if dialect == "llamacpp":
        root = server_root(server.base_url)
        status, _body = await _get_json(root + "/health", server=server, timeout=timeout)
        if status == 200:
            _status, props = await _get_json(root + "/props", server=server, timeout=timeout)
            if (n_ctx := props_context(props)) is not None:
                detail["n_ctx"] = n_ctx
            try:
                models = await _list_models(server, timeout=timeout)
            except ProviderError as exc:
                if exc.kind != "timeout":
                    raise
                models = None  # busy generating: alive (it answered /health), models unchanged
            return ProbeResult(models=models, loaded=None, version="", detail=detail)
        if status not in (404, 405):
            raise ProviderError.from_status(status, "health check failed", server=server.name)
    return ProbeResult(models=await _list_models(server, timeout=timeout), loaded=None, version="", detail=detail)


async def _list_models(server: ServerSpec, *, timeout: float) -> list[str]:
    client = _client(server, timeout)
    try:
        page = await client.models.list(timeout=request_timeout(timeout, read_s=timeout))
        return [m.id for m in page.data]
    except (openai.APIError, httpx.HTTPError) as exc:
        raise _as_provider_error(exc, server=server) from exc
