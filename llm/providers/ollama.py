"""Ollama's native HTTP API through httpx: /api/chat (NDJSON stream), /api/generate, /api/embed, /api/tags,
/api/ps, /api/version. Usage comes from prompt_eval_count / eval_count of the final chunk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx

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
from llm.types import ChatRequest, GenerationParams

# Every gateway parameter has an Ollama option.
OPTION_NAMES = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "num_predict",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "repeat_penalty": "repeat_penalty", "seed": "seed", "stop": "stop", "num_ctx": "num_ctx",
}


def normalize_model(name: str) -> str:
    """Ollama treats "llama3.2" and "llama3.2:latest" as the same model."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def map_params(params: GenerationParams, *, dialect: str = "", model: str = "") -> tuple[dict, list[str]]:
    options = {OPTION_NAMES[name]: value for name, value in params.set_params().items()}
    return options, []


def chat_body(model: str, request: ChatRequest, *, stream: bool = True) -> tuple[dict, list[str]]:
    options, ignored = map_params(request.params)
    # truncate=false: an overlong prompt is refused (ContextOverflow) instead of silently cut from the start, which
    # drops the system prompt. Ollama versions without the field ignore it; num_ctx is what makes those fit.
    body: dict = {"model": model, "messages": request.messages, "stream": stream, "truncate": False}
    if options:
        body["options"] = options
    if request.json_schema is not None:
        body["format"] = request.json_schema
    if request.keep_alive is not None:
        body["keep_alive"] = request.keep_alive
    return body, ignored


def _usage(final: dict) -> Usage | None:
    prompt, output = final.get("prompt_eval_count"), final.get("eval_count")
    if prompt is None and output is None:
        return None
    # Ollama leaves prompt_eval_count out when the whole prompt came from its cache: reported, just not counted.
    return Usage(input_tokens=int(prompt or 0), output_tokens=int(output or 0), estimated=prompt is None)


async def _error_detail(response: httpx.Response) -> str:
    raw = (await response.aread())[:2000]
    try:
        return str(json.loads(raw).get("error") or raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")


async def _ndjson(server: ServerSpec, path: str, body: dict, *, connect_timeout: float) -> AsyncIterator[dict]:
    try:
        async with http_client(server).stream("POST", server.base_url + path, json=body,
                                              timeout=request_timeout(connect_timeout)) as response:
            if response.status_code != 200:
                raise ProviderError.from_status(response.status_code, await _error_detail(response),
                                                server=server.name, echo=not server.guarded)
            lines = response.aiter_lines()
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except ValueError as exc:
                    raise ProviderError(f"{server.name} sent a malformed stream line", kind="stream") from exc
                if data.get("error"):
                    if is_context_overflow(str(data["error"])):
                        raise ProviderError.context(str(data["error"]), server=server.name, echo=not server.guarded)
                    said = f": {data['error']}" if not server.guarded else " sent an error instead of an answer"
                    raise ProviderError(f"{server.name}{said}", kind="stream")
                yield data
                if data.get("done"):
                    # Read to the end of the body so the connection goes back to the pool for the next call.
                    try:
                        async with asyncio.timeout(1.0):
                            async for _rest in lines:
                                pass
                    except (TimeoutError, httpx.HTTPError):
                        pass
                    return
    except httpx.HTTPError as exc:
        raise transport_error(exc, server=server.name, echo=not server.guarded) from exc
    raise ProviderError(f"{server.name} ended the stream before it was done", kind="stream")


async def stream_chat(server: ServerSpec, model: str, request: ChatRequest, *, dialect: str = "",
                      connect_timeout: float = 3.0) -> AsyncIterator[Delta | Done]:
    body, _ignored = chat_body(model, request)
    async for data in _ndjson(server, "/api/chat", body, connect_timeout=connect_timeout):
        text = (data.get("message") or {}).get("content") or ""
        if text:
            yield Delta(text)
        if data.get("done"):
            yield Done(_usage(data), data.get("done_reason") or "stop")


async def stream_generate(server: ServerSpec, model: str, prompt: str, *, params: GenerationParams | None = None,
                          system: str | None = None, json_schema: dict | None = None,
                          connect_timeout: float = 3.0) -> AsyncIterator[Delta | Done]:
    """Plain completion (/api/generate), for callers that build their own prompt."""
    options, _ignored = map_params(params or GenerationParams())
    body: dict = {"model": model, "prompt": prompt, "stream": True}
    if options:
        body["options"] = options
    if system:
        body["system"] = system
    if json_schema is not None:
        body["format"] = json_schema
    async for data in _ndjson(server, "/api/generate", body, connect_timeout=connect_timeout):
        if data.get("response"):
            yield Delta(data["response"])
        if data.get("done"):
            yield Done(_usage(data), data.get("done_reason") or "stop")


async def embed(server: ServerSpec, model: str, texts: list[str], *, dimensions: int | None = None,
                connect_timeout: float = 3.0, timeout: float = 120.0) -> tuple[list[list[float]], Usage | None]:
    body = {"model": model, "input": texts, "truncate": True}
    if dimensions:
        body["dimensions"] = dimensions
    try:
        response = await http_client(server).post(
            server.base_url + "/api/embed", json=body,
            timeout=request_timeout(connect_timeout, read_s=timeout),
        )
    except httpx.HTTPError as exc:
        raise transport_error(exc, server=server.name, echo=not server.guarded) from exc
    if response.status_code != 200:
        raise ProviderError.from_status(response.status_code, await _error_detail(response), server=server.name,
                                        echo=not server.guarded)
    data = response.json()
    vectors = data.get("embeddings")
    if not isinstance(vectors, list) or len(vectors) != len(texts):
        raise ProviderError(f"{server.name} returned {len(vectors or [])} embeddings for {len(texts)} texts",
                            kind="stream")
    count = data.get("prompt_eval_count")
    return vectors, (Usage(input_tokens=int(count)) if count is not None else None)


async def probe(server: ServerSpec, *, timeout: float = 3.0, dialect: str = "") -> ProbeResult:
    client = http_client(server)
    t = request_timeout(timeout, read_s=timeout)
    try:
        version = await client.get(server.base_url + "/api/version", timeout=t)
        if version.status_code != 200:
            raise ProviderError.from_status(version.status_code, await _error_detail(version), server=server.name,
                                            echo=not server.guarded)
        tags = await client.get(server.base_url + "/api/tags", timeout=t)
        ps = await client.get(server.base_url + "/api/ps", timeout=t)
    except httpx.HTTPError as exc:
        raise transport_error(exc, server=server.name, echo=not server.guarded) from exc
    if tags.status_code != 200:
        raise ProviderError.from_status(tags.status_code, await _error_detail(tags), server=server.name,
                                        echo=not server.guarded)
    try:
        models = [m.get("model") or m.get("name") for m in tags.json().get("models", [])]
        loaded = [m.get("model") or m.get("name") for m in ps.json().get("models", [])] if ps.status_code == 200 else []
        return ProbeResult(models=[normalize_model(m) for m in models if m],
                           loaded=[normalize_model(m) for m in loaded if m],
                           version=str(version.json().get("version", "")))
    except (ValueError, AttributeError) as exc:
        raise ProviderError(f"{server.name} is not an Ollama server (unexpected reply)", kind="config",
                            retryable=False) from exc
