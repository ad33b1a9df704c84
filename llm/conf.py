"""The runtime record `manage.py start_local_llm` leaves in Redis to say which model server `make run` chose,
and the names of the default models. (The gateway's settings live in config/settings/base.py.)"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from django.conf import settings

OPENAI_DEFAULT_MODEL = "gpt-4o-mini"
LOCAL_MODEL = "smollm2"
LOCAL_MODEL_LABEL = "SmolLM2 135M"


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
    from llm.state import sync_redis  # cycle: llm.state -> llm.conf

    try:
        raw = sync_redis().get(settings.LLM_REDIS_PREFIX + RUNTIME_KEY)
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
    from llm.state import sync_redis  # cycle: llm.state -> llm.conf

    record.updated_at = time.time()
    sync_redis().set(settings.LLM_REDIS_PREFIX + RUNTIME_KEY, json.dumps(record.__dict__), ex=ttl_s)
    _runtime_cache = (0.0, None)


def forget_cached_runtime() -> None:
    global _runtime_cache
    _runtime_cache = (0.0, None)


def runtime_clear() -> None:
    global _runtime_cache
    from llm.state import sync_redis  # cycle: llm.state -> llm.conf

    sync_redis().delete(settings.LLM_REDIS_PREFIX + RUNTIME_KEY)
    _runtime_cache = (0.0, None)
