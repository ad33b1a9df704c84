"""Gateway settings (config/settings/base.py reads them from the environment; defaults here) and the runtime
record `manage.py start_local_llm` leaves in Redis to say which model server `make run` chose."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from django.conf import settings

DEFAULTS = {
    "OPENAI_API_KEY": "",
    "OPENAI_BASE_URL": "",
    "OPENAI_MODELS": ["gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini", "gpt-4o"],
    "OPENAI_MAX_CONCURRENCY": 16,
    "OLLAMA_HOSTS": [],
    "OLLAMA_MODEL": "",
    "OLLAMA_NUM_PARALLEL": 1,
    "LOCAL_LLM_URL": "",
    "LOCAL_LLM_PORT": 8089,
    "LLM_ANSWER_TARGET": "",
    "LLM_CHEAP_TARGET": "",
    "LLM_POOL_STRATEGY": "least_busy",
    "LLM_QUEUE_TIMEOUT_S": 30.0,
    "LLM_MAX_QUEUE": 200,
    "LLM_CONNECT_TIMEOUT_S": 3.0,
    "LLM_FIRST_TOKEN_TIMEOUT_S": 120.0,
    "LLM_IDLE_TIMEOUT_S": 30.0,
    "LLM_HEALTH_INTERVAL_S": 15.0,
    "LLM_COOLDOWN_BASE_S": 5.0,
    "LLM_COOLDOWN_MAX_S": 60.0,
    "LLM_FAILURES_BEFORE_COOLDOWN": 2,
    "LLM_RESERVE_OUTPUT_TOKENS": 2048,
    "LLM_REDIS_PREFIX": "llm:",
}

OPENAI_DEFAULT_MODEL = "gpt-4o-mini"
LOCAL_MODEL = "smollm2"
LOCAL_MODEL_LABEL = "SmolLM2 135M"


def get(name: str):
    return getattr(settings, name, DEFAULTS[name])


def prefix() -> str:
    return get("LLM_REDIS_PREFIX")


# --- runtime record -------------------------------------------------------------------------------------------

RUNTIME_KEY = "runtime"


@dataclass
class Runtime:
    """Which model server `make run` started or found: source is openai | ollama | llamacpp | none.

    state "down": the llama.cpp server `start_local_llm` supervises stopped and is being restarted.
    """

    source: str
    base_url: str = ""
    model: str = ""
    detail: str = ""
    updated_at: float = 0.0
    state: str = "up"

    @property
    def down(self) -> bool:
        return self.state == "down"


_runtime_cache: tuple[float, Runtime | None] = (0.0, None)


def runtime_read(*, max_age_s: float = 2.0) -> Runtime | None:
    global _runtime_cache
    now = time.monotonic()
    if now - _runtime_cache[0] < max_age_s:
        return _runtime_cache[1]
    from llm.state import sync_redis

    try:
        raw = sync_redis().get(prefix() + RUNTIME_KEY)
    except Exception:  # noqa: BLE001 - Redis down: behave as if nothing was started
        raw = None
    record = None
    if raw:
        try:
            record = Runtime(**json.loads(raw))
        except (TypeError, ValueError):
            record = None
    _runtime_cache = (now, record)
    return record


def runtime_write(record: Runtime, *, ttl_s: int | None = None) -> None:
    global _runtime_cache
    from llm.state import sync_redis

    record.updated_at = time.time()
    sync_redis().set(prefix() + RUNTIME_KEY, json.dumps(record.__dict__), ex=ttl_s)
    _runtime_cache = (0.0, None)


def forget_cached_runtime() -> None:
    global _runtime_cache
    _runtime_cache = (0.0, None)


def runtime_clear() -> None:
    global _runtime_cache
    from llm.state import sync_redis

    sync_redis().delete(prefix() + RUNTIME_KEY)
    _runtime_cache = (0.0, None)
