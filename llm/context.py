"""Each model's real context window: the tokens a prompt and its answer may take together.

The first source that knows wins:
  1. the pool's per-model override (admin: Pool.context_windows; environment: LLM_CONTEXT_WINDOWS);
  2. the servers: llama.cpp's /props (n_ctx per slot); Ollama's /api/show (the Modelfile's num_ctx, else the
     model's trained context length capped at OLLAMA_MAX_CONTEXT, which the gateway then asks for with
     options.num_ctx so Ollama does not cut the prompt at its own default); an OpenAI-compatible /v1/models entry
     that states it (vLLM max_model_len, OpenRouter/LM Studio context_length);
  3. the table of OpenAI models below.
A pool's window is the smallest of its servers' (a request may land on any). Found values are cached in Redis,
shared by every process, and briefly in this process; "unknown" is cached for a shorter time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time

import httpx
from django.conf import settings

from llm import state
from llm.providers.base import guarded_sync_client
from llm.providers.ollama import normalize_model
from llm.registry import PoolSpec, ServerSpec

logger = logging.getLogger(__name__)

KNOWN_TTL_S = 600  # a server's window changes only when it restarts with other settings
UNKNOWN_TTL_S = 60
LOCAL_CACHE_S = 30.0
ANY_MODEL = "*"  # llama.cpp serves one model: its window does not depend on the name asked for

# Prompt + answer limits of OpenAI models (platform.openai.com/docs/models), longest prefix first wins.
# gpt-5 accepts 400k in total but at most 272k of input: the smaller bound keeps prompt + max_tokens valid.
OPENAI_CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-5", 272_000), ("gpt-4.1", 1_047_576), ("gpt-4o", 128_000), ("chatgpt-4o", 128_000),
    ("gpt-4-turbo", 128_000), ("gpt-4-32k", 32_768), ("gpt-4", 8_192), ("gpt-3.5-turbo", 16_385),
    ("o1-mini", 128_000), ("o1", 200_000), ("o3", 200_000), ("o4-mini", 200_000),
)


def openai_table_window(model: str) -> int | None:
    name = model.rsplit("/", 1)[-1].lower()  # "openai/gpt-4o" on routers
    best = None
    for prefix, window in OPENAI_CONTEXT_WINDOWS:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, window)
    return best[1] if best else None


def override(pool: PoolSpec, model: str) -> int | None:
    """The pool configuration's window for `model` ("*" covers every model of the pool)."""
    windows = dict(pool.context_windows)
    if not windows:
        return None
    for name in (model, model.removesuffix(":latest"), f"{model}:latest" if ":" not in model else model, ANY_MODEL):
        if name in windows:
            return int(windows[name])
    return None


def ollama_window(show: dict) -> int | None:
    """The window Ollama will run `model` with when asked for it with num_ctx (see the module docstring)."""
    trained = None
    for name, value in (show.get("model_info") or {}).items():
        if name.endswith(".context_length") and isinstance(value, int) and value > 0:
            trained = value
    configured = re.search(r"^\s*num_ctx\s+(\d+)", show.get("parameters") or "", re.M)
    if configured:
        n = int(configured.group(1))
        return min(n, trained) if trained else n
    if trained:
        return min(trained, int(settings.OLLAMA_MAX_CONTEXT))
    return None


def props_window(props: dict | None) -> int | None:
    from llm.providers.openai_compat import props_context  # imports the openai SDK (~1.5 s): not at load

    return props_context(props)


def models_entry_window(listing: dict | None, model: str) -> int | None:
    for entry in (listing or {}).get("data") or []:
        if isinstance(entry, dict) and entry.get("id") == model:
            for name in ("max_model_len", "context_length", "max_context_length", "context_window"):
                value = entry.get(name)
                if isinstance(value, int) and value > 0:
                    return value
    return None


# --- discovery ------------------------------------------------------------------------------------------------

def _cache_model(pool: PoolSpec, model: str) -> str:
    return ANY_MODEL if pool.kind == "openai" and pool.dialect == "llamacpp" else model


def _cache_key(pool: PoolSpec, model: str) -> str:
    # The servers and their URLs are part of the key: a pool whose servers change (admin, a model server restarted
    # on another port) is rediscovered, and two tenants' providers of the same name never share an entry.
    servers = hashlib.sha1("|".join(f"{s.sid}@{s.base_url}" for s in pool.servers).encode()).hexdigest()[:10]
    return state.key("ctx", pool.name, servers, _cache_model(pool, model))


def _json(response: httpx.Response) -> dict | None:
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _server_window(client: httpx.Client, pool: PoolSpec, server: ServerSpec, model: str) -> int | None:
    if pool.kind == "ollama":
        return ollama_window(_json(client.post(server.base_url + "/api/show", json={"model": normalize_model(model)}))
                             or {})
    if pool.dialect == "openai":
        return None  # api.openai.com states no window: the table answers
    from llm.providers.openai_compat import server_root  # imports the openai SDK (~1.5 s): not at load

    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    order = ("props", "models") if pool.dialect == "llamacpp" else ("models", "props")
    for source in order:
        if source == "props":
            found = props_window(_json(client.get(server_root(server.base_url) + "/props", headers=headers)))
        else:
            found = models_entry_window(_json(client.get(server.base_url.rstrip("/") + "/models", headers=headers)),
                                        model)
        if found:
            return found
    return None


def discover(pool: PoolSpec, model: str) -> int | None:
    """Ask the pool's servers (sync HTTP, short timeouts); the smallest window any of them states."""
    timeout = float(settings.LLM_PROBE_TIMEOUT_S)
    found: list[int] = []
    # A tenant's provider is asked through the client that reaches allowed addresses only (llm/netguard.py).
    guarded = any(s.guarded for s in pool.servers)
    with (guarded_sync_client(timeout) if guarded else httpx.Client(timeout=httpx.Timeout(timeout))) as client:
        for server in pool.servers:
            try:
                window = _server_window(client, pool, server, model)
            except httpx.HTTPError as exc:
                logger.info("llm: no context window from %s: %s", server.name, type(exc).__name__)
                continue
            if window:
                found.append(window)
    if found:
        return min(found)
    if pool.kind == "openai":
        return openai_table_window(model)
    return None


# --- cache ----------------------------------------------------------------------------------------------------

_local: dict[str, tuple[float, int | None]] = {}


def _from_local(cache_key: str) -> tuple[bool, int | None]:
    hit = _local.get(cache_key)
    if hit and hit[0] > time.monotonic():
        return True, hit[1]
    return False, None


def _decode(raw) -> int | None:
    value = int(raw)
    return value or None


def remember(pool: PoolSpec, model: str, window: int | None) -> None:
    """Store a window found elsewhere (a health check's /props), for every process."""
    cache_key = _cache_key(pool, model)
    _local[cache_key] = (time.monotonic() + LOCAL_CACHE_S, window)
    try:
        state.sync_redis().set(cache_key, window or 0, ex=KNOWN_TTL_S if window else UNKNOWN_TTL_S)
    except Exception as exc:  # noqa: BLE001 - a cache miss only costs another discovery
        logger.warning("llm: could not cache a context window: %s", exc)


def forget() -> None:
    _local.clear()


def window_sync(pool: PoolSpec, model: str) -> int | None:
    """The pool's window for `model` (sync): override, cache, else discovery; None when nothing says."""
    if (configured := override(pool, model)) is not None:
        return configured
    cache_key = _cache_key(pool, model)
    hit, value = _from_local(cache_key)
    if hit:
        return value
    try:
        raw = state.sync_redis().get(cache_key)
    except Exception:  # noqa: BLE001 - Redis trouble: discover without the shared cache
        raw = None
    if raw is not None:
        value = _decode(raw)
        _local[cache_key] = (time.monotonic() + LOCAL_CACHE_S, value)
        return value
    value = discover(pool, model)
    remember(pool, model, value)
    return value


async def window_async(pool: PoolSpec, model: str) -> int | None:
    """window_sync for the gateway's event loop: the process cache without blocking, the rest in a thread."""
    if (configured := override(pool, model)) is not None:
        return configured
    hit, value = _from_local(_cache_key(pool, model))
    if hit:
        return value
    return await asyncio.to_thread(window_sync, pool, model)
