"""Where targets point: "<pool or provider>/<model>" -> a PoolSpec with its servers.

Pools come from, in order of precedence:
  1. pools registered in code (`register_pool`, for tests and benchmarks),
  2. a tenant's own provider ("tenant:<name>/<model>", only for that tenant),
  3. staff-configured pools (Django admin, llm.models.Pool),
  4. the environment: "openai" (OPENAI_API_KEY), "ollama" (OLLAMA_HOSTS / OLLAMA_HOST, or the Ollama that
     `make run` found), "local" (the llama.cpp server `make run` started, or LOCAL_LLM_URL).
Specs are plain frozen data, cached briefly per process so the hot path does not touch the database.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from django.conf import settings

from accounts.tenancy import tenant_scope
from llm import conf
from llm.crypto import SecretUnreadable, decrypt_secret
from llm.models import Pool, TenantProvider
from llm.types import ModelUnavailable

CACHE_S = 5.0
TENANT_PREFIX = "tenant:"


@dataclass(frozen=True)
class ServerSpec:
    sid: str  # key of the server's live state in Redis
    name: str  # shown to staff and on usage records
    base_url: str
    api_key: str = field(default="", repr=False)
    weight: float = 1.0
    slots: int = 1
    # A tenant configured the URL: reached through llm/netguard.py only, and upstream error texts are not quoted.
    guarded: bool = False


@dataclass(frozen=True)
class PoolSpec:
    name: str
    kind: str  # ollama | openai
    servers: tuple[ServerSpec, ...]
    dialect: str = "generic"  # openai | llamacpp | generic (OpenAI-compatible pools)
    strategy: str = "least_busy"
    is_local: bool = True
    provider_label: str = ""  # provider name on usage records (prices)
    models: tuple[str, ...] = ()  # offered in pickers; Ollama pools add discovered models
    queue_timeout_s: float = 30.0
    max_queue: int = 200
    max_attempts: int = 3
    connect_timeout_s: float = 3.0
    first_token_timeout_s: float = 120.0
    idle_timeout_s: float = 30.0
    source: str = "db"  # static | tenant | db | env
    label: str = ""  # human name for pickers and the status page
    note: str = ""  # e.g. that the tiny default model is for trying things out
    # Per-model context windows that win over discovery: (("llama3.2", 8192), ("*", 4096)); see llm/context.py.
    context_windows: tuple[tuple[str, int], ...] = ()

    @property
    def provider(self) -> str:
        return self.provider_label or derive_provider_label(self.kind, self.dialect,
                                                            self.servers[0].base_url if self.servers else "",
                                                            self.name, is_local=self.is_local)


CLOUD_HOSTS = (("api.openai.com", "openai"), ("generativelanguage.googleapis.com", "gemini"), ("api.x.ai", "xai"),
               ("openrouter.ai", "openrouter"), ("api.groq.com", "groq"), ("api.mistral.ai", "mistral"),
               ("api.deepseek.com", "deepseek"))


def derive_provider_label(kind: str, dialect: str, base_url: str, name: str, *, is_local: bool = False) -> str:
    """The provider name on usage records, which billing prices by: ollama / llamacpp / local (self-hosted,
    free unless an operator sets a price), or the cloud provider the URL points to."""
    if kind == "ollama":
        return "ollama"
    if dialect == "llamacpp":
        return "llamacpp"
    host = urlparse(base_url).hostname or ""
    for suffix, label in CLOUD_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return label
    return "local" if is_local else name


def split_target(target: str) -> tuple[str, str]:
    pool, sep, model = (target or "").partition("/")
    if not sep or not pool or not model:
        raise ModelUnavailable(f"'{target}' is not a model target; expected '<pool>/<model>', e.g. 'local/smollm2'")
    return pool, model


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url and "://" not in url:
        url = "http://" + url
    return url


# --- static pools (tests, benchmarks) -------------------------------------------------------------------------

_static: dict[str, PoolSpec] = {}


def register_pool(spec: PoolSpec) -> None:
    _static[spec.name] = spec


def unregister_pool(name: str) -> None:
    _static.pop(name, None)


# --- environment pools ----------------------------------------------------------------------------------------

LOCAL_NOTE = "A tiny model for trying ragdesk out; connect OpenAI or Ollama for real answers."


def _env_context_windows(pool_name: str) -> tuple[tuple[str, int], ...]:
    """LLM_CONTEXT_WINDOWS entries ("<pool>/<model>" or "<pool>/*" = tokens) of one environment pool."""
    found = []
    for target, window in (settings.LLM_CONTEXT_WINDOWS or {}).items():
        pool, sep, model = target.partition("/")
        if sep and pool == pool_name and model:
            found.append((model, int(window)))
    return tuple(found)


def env_pools() -> dict[str, PoolSpec]:
    pools: dict[str, PoolSpec] = {}
    strategy = settings.LLM_POOL_STRATEGY
    timeouts = {
        "queue_timeout_s": settings.LLM_QUEUE_TIMEOUT_S,
        "max_queue": settings.LLM_MAX_QUEUE,
        "connect_timeout_s": settings.LLM_CONNECT_TIMEOUT_S,
        "first_token_timeout_s": settings.LLM_FIRST_TOKEN_TIMEOUT_S,
        "idle_timeout_s": settings.LLM_IDLE_TIMEOUT_S,
    }
    runtime = conf.runtime_read()
    key = settings.OPENAI_API_KEY
    if key:
        base = normalize_url(settings.OPENAI_BASE_URL or "https://api.openai.com/v1")
        official = (urlparse(base).hostname or "") == "api.openai.com"
        pools[OPENAI_POOL] = PoolSpec(
            name=OPENAI_POOL, kind="openai", dialect="openai" if official else "generic", strategy=strategy,
            is_local=False, models=tuple(settings.OPENAI_MODELS), source="env",
            servers=(ServerSpec(sid="env:openai:0", name=urlparse(base).hostname or base, base_url=base, api_key=key,
                                slots=settings.OPENAI_MAX_CONCURRENCY),),
            label="OpenAI" if official else "OpenAI-compatible", context_windows=_env_context_windows("openai"),
            **timeouts,
        )
    hosts = [normalize_url(h) for h in settings.OLLAMA_HOSTS if h.strip()]
    if not hosts and runtime and runtime.source == "ollama" and runtime.base_url:
        hosts = [normalize_url(runtime.base_url)]
    if hosts:
        slots = settings.OLLAMA_NUM_PARALLEL
        default_model = settings.OLLAMA_MODEL or (runtime.model if runtime and runtime.source == "ollama" else "")
        pools["ollama"] = PoolSpec(
            name="ollama", kind="ollama", strategy=strategy, is_local=True, source="env", label="Ollama",
            models=(default_model,) if default_model else (),
            servers=tuple(ServerSpec(sid=f"env:ollama:{urlparse(h).netloc}", name=urlparse(h).netloc, base_url=h,
                                     slots=slots) for h in hosts),
            context_windows=_env_context_windows("ollama"), **timeouts,
        )
    local_url = settings.LOCAL_LLM_URL
    if not local_url and runtime and runtime.source == "llamacpp" and not runtime.down:
        local_url = runtime.base_url
    if local_url:
        base = normalize_url(local_url)
        if not base.endswith("/v1"):
            base += "/v1"
        pools["local"] = PoolSpec(
            name="local", kind="openai", dialect="llamacpp", strategy=strategy, is_local=True, source="env",
            models=(conf.LOCAL_MODEL,), label=f"{conf.LOCAL_MODEL_LABEL} (llama.cpp)", note=LOCAL_NOTE,
            servers=(ServerSpec(sid="env:local:0", name="llama.cpp", base_url=base, slots=1),),
            context_windows=_env_context_windows("local"), **timeouts,
        )
    return pools


# --- database pools -------------------------------------------------------------------------------------------

_db_cache: tuple[float, dict[str, PoolSpec]] = (0.0, {})
_db_lock = threading.Lock()


def _pool_spec_from_row(pool) -> PoolSpec:
    servers = []
    for server in pool.servers.all():
        if not server.enabled:
            continue
        try:
            key = decrypt_secret(server.api_key_encrypted)
        except SecretUnreadable:
            key = ""
        servers.append(ServerSpec(sid=f"db:{server.pk}", name=server.name, base_url=normalize_url(server.base_url),
                                  api_key=key, weight=server.weight, slots=server.max_slots))
    return PoolSpec(
        name=pool.name, kind=pool.kind, dialect=pool.dialect if pool.kind == "openai" else "",
        strategy=pool.strategy, is_local=pool.is_local, provider_label=pool.provider_label,
        models=tuple(pool.models or ()), queue_timeout_s=pool.queue_timeout_s, max_queue=pool.max_queue,
        max_attempts=pool.max_attempts, connect_timeout_s=pool.connect_timeout_s,
        first_token_timeout_s=pool.first_token_timeout_s, idle_timeout_s=pool.idle_timeout_s,
        source="db", label=pool.description or pool.name, servers=tuple(servers),
        context_windows=tuple((str(m), int(n)) for m, n in (pool.context_windows or {}).items()),
    )


def db_pools(*, fresh: bool = False) -> dict[str, PoolSpec]:
    """Enabled staff-configured pools (sync: call through sync_to_async from async code)."""
    global _db_cache
    now = time.monotonic()
    if not fresh and now - _db_cache[0] < CACHE_S:
        return _db_cache[1]
    with _db_lock:
        pools = {p.name: _pool_spec_from_row(p) for p in Pool.objects.filter(enabled=True).prefetch_related("servers")}
        _db_cache = (now, pools)
    return pools


def invalidate() -> None:
    global _db_cache
    _db_cache = (0.0, {})


# --- tenant providers -----------------------------------------------------------------------------------------

def tenant_pool(provider) -> PoolSpec:
    try:
        key = decrypt_secret(provider.api_key_encrypted)
    except SecretUnreadable:
        key = ""
    base = normalize_url(provider.base_url)
    return PoolSpec(
        name=provider.pool_name, kind="openai", dialect=_dialect_for(base), strategy="least_busy",
        is_local=provider.self_hosted, models=tuple(provider.models or ()), source="tenant",
        provider_label=derive_provider_label("openai", "generic", base, "custom", is_local=provider.self_hosted),
        label=provider.name,
        queue_timeout_s=settings.LLM_QUEUE_TIMEOUT_S, max_attempts=1,
        connect_timeout_s=settings.LLM_CONNECT_TIMEOUT_S,
        first_token_timeout_s=settings.LLM_FIRST_TOKEN_TIMEOUT_S,
        idle_timeout_s=settings.LLM_IDLE_TIMEOUT_S,
        servers=(ServerSpec(sid=f"tenant:{provider.tenant_id}:{provider.pk}", name=f"tenant:{provider.name}",
                            base_url=base, api_key=key, slots=provider.max_concurrency, guarded=True),),
    )


def _dialect_for(base_url: str) -> str:
    return "openai" if (urlparse(base_url).hostname or "") == "api.openai.com" else "generic"


def tenant_provider_row(tenant, name: str):
    if tenant is None:
        return None
    with tenant_scope(tenant):
        return TenantProvider.objects.filter(name=name).first()


# --- resolution -----------------------------------------------------------------------------------------------

LOCAL_POOL = "local"
OPENAI_POOL = "openai"  # the environment pool OPENAI_API_KEY configures


def local_server_down() -> str:
    """Why the local model server `start_local_llm` supervises cannot answer now (it died and is being
    restarted), else "". Distinct from "not configured": the pool exists, its server is down."""
    runtime = conf.runtime_read()
    if runtime is None or runtime.source != "llamacpp" or not runtime.down or settings.LOCAL_LLM_URL:
        return ""
    return "the local model server is not responding (it stopped and is being restarted); try again in a moment"


def resolve_pool(pool_name: str, *, tenant=None) -> PoolSpec:
    """The pool a target names (sync; touches the database at most every CACHE_S seconds)."""
    if pool_name in _static:
        return _static[pool_name]
    if pool_name.startswith(TENANT_PREFIX):
        row = tenant_provider_row(tenant, pool_name[len(TENANT_PREFIX):])
        if row is None:
            raise ModelUnavailable(f"no provider named '{pool_name}' for this team")
        return tenant_pool(row)
    pools = db_pools()
    if pool_name in pools:
        return pools[pool_name]
    env = env_pools()
    if pool_name in env:
        return env[pool_name]
    if pool_name == LOCAL_POOL and (down := local_server_down()):
        raise ModelUnavailable(down)
    if pool_name == OPENAI_POOL:
        raise ModelUnavailable(f"no model pool or provider named '{pool_name}' (OPENAI_API_KEY is not set)")
    known = sorted(set(_static) | set(pools) | set(env))
    raise ModelUnavailable(
        f"no model pool or provider named '{pool_name}'" + (f" (configured: {', '.join(known)})" if known else
                                                              " (none configured: set OPENAI_API_KEY or OLLAMA_HOSTS,"
                                                              " or add a pool in the admin)")
    )


def resolve_pool_if_cached(pool_name: str) -> PoolSpec | None:
    """The pool without touching the database (async callers), or None when a database read is due."""
    if pool_name in _static:
        return _static[pool_name]
    if pool_name.startswith(TENANT_PREFIX) or time.monotonic() - _db_cache[0] >= CACHE_S:
        return None
    return _db_cache[1].get(pool_name) or env_pools().get(pool_name)


def platform_pools() -> list[PoolSpec]:
    """Every pool staff can see (static, admin, env), precedence applied."""
    pools = dict(env_pools())
    pools.update(db_pools())
    pools.update(_static)
    return [pools[name] for name in sorted(pools)]


def is_local_target(target: str, *, tenant=None) -> bool:
    pool_name, _model = split_target(target)
    return resolve_pool(pool_name, tenant=tenant).is_local
