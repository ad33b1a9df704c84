"""Reads: which targets a tenant may pick, the defaults `make run` configured, and the staff status view."""

from __future__ import annotations

import json
import time

from django.conf import settings
from django.utils.translation import gettext as _

from accounts.selectors import tenant_object_or_404
from accounts.tenancy import current_tenant, tenant_scope
from llm import conf, context, registry, state
from llm.models import TenantProvider
from llm.registry import PoolSpec

# --- defaults -------------------------------------------------------------------------------------------------

def _default_target(kind: str) -> str:
    explicit = settings.LLM_ANSWER_TARGET if kind == "answer" else settings.LLM_CHEAP_TARGET
    if explicit:
        return explicit
    if kind == "cheap" and settings.LLM_ANSWER_TARGET:
        return settings.LLM_ANSWER_TARGET
    runtime = conf.runtime_read()
    ollama_model = settings.OLLAMA_MODEL
    if runtime is not None:
        if runtime.source == "openai" and settings.OPENAI_API_KEY:
            return f"openai/{conf.OPENAI_DEFAULT_MODEL}"
        if runtime.source == "ollama" and (ollama_model or runtime.model):
            return f"ollama/{ollama_model or runtime.model}"
        if runtime.source == "llamacpp":
            return f"local/{conf.LOCAL_MODEL}"
    if settings.OPENAI_API_KEY:
        return f"openai/{conf.OPENAI_DEFAULT_MODEL}"
    if settings.OLLAMA_HOSTS:
        return f"ollama/{ollama_model or 'llama3.2'}"
    return f"local/{conf.LOCAL_MODEL}"


def default_answer_target() -> str:
    """The target answers use unless an assistant names another (LLM_ANSWER_TARGET, else what `make run` chose)."""
    return _default_target("answer")


def default_cheap_target() -> str:
    """The target for condense / expansion / compression calls (LLM_CHEAP_TARGET, else the answer default)."""
    return _default_target("cheap")


def target_is_local(target: str) -> bool:
    """True when the target's servers are self-hosted (allowed under a local-only policy). Unknown -> False."""
    try:
        return registry.is_local_target(target, tenant=current_tenant())
    except Exception:  # noqa: BLE001 - an unknown or malformed target is not local
        return False


def model_context_window(*, tenant, target: str) -> int | None:
    """Tokens `target`'s model accepts (prompt plus answer), or None when unknown.

    From the pool configuration's per-model override, else the servers (llama.cpp /props, Ollama /api/show,
    an OpenAI-compatible /v1/models entry), else the OpenAI table; cached in Redis for minutes (llm/context.py).
    An unknown or malformed target is None, not an error: the caller falls back to its own setting.
    """
    try:
        pool_name, model = registry.split_target(target)
        pool = registry.resolve_pool(pool_name, tenant=tenant)
    except Exception:  # noqa: BLE001 - the answer itself will report the real routing error
        return None
    return context.window_sync(pool, model)


# --- choices for pickers --------------------------------------------------------------------------------------

def _pool_models(pool: PoolSpec) -> list[str]:
    models = list(pool.models)
    if pool.kind == "ollama":
        r = state.sync_redis()
        try:
            raws = r.pipeline(transaction=False)
            for server in pool.servers:
                raws.hget(state.key("srv", server.sid), "models")
            for raw in raws.execute():
                if raw:
                    models += json.loads(raw)
        except Exception:  # noqa: BLE001 - Redis down: offer the configured models
            pass
    seen: dict[str, None] = {}
    for model in models:
        if model and model.removesuffix(":latest") not in seen and model not in seen:
            seen[model] = None
    return list(seen)


def _label(pool: PoolSpec, model: str) -> str:
    where = _("local") if pool.is_local else _("cloud")
    if pool.note and model == conf.LOCAL_MODEL:
        return _("%(model)s (%(where)s) · tiny demo model, for trying things out") % {
            "model": conf.LOCAL_MODEL_LABEL, "where": where}
    return f"{model} · {pool.label or pool.name} ({where})"


def target_choices(*, tenant) -> list[tuple[str, str]]:
    """(target, label) pairs this tenant may pick; cloud targets are left out under a local-only policy."""
    choices: list[tuple[str, str]] = []
    for pool in registry.platform_pools():
        if not tenant.allows_model(is_local=pool.is_local):
            continue
        for model in _pool_models(pool):
            choices.append((f"{pool.name}/{model}", _label(pool, model)))
    with tenant_scope(tenant):
        for provider in TenantProvider.objects.all():
            if not tenant.allows_model(is_local=provider.self_hosted):
                continue
            for model in provider.models:
                where = _("your own server") if provider.self_hosted else _("your own key")
                choices.append((f"{provider.pool_name}/{model}", f"{model} · {provider.name} ({where})"))
    default = default_answer_target()
    if default not in {value for value, _label in choices}:
        try:
            pool_name, model = registry.split_target(default)
            pool = registry.resolve_pool(pool_name, tenant=tenant)
            if tenant.allows_model(is_local=pool.is_local):
                choices.insert(0, (default, _label(pool, model)))
        except Exception:  # noqa: BLE001 - a default that points nowhere is shown on the status page instead
            pass
    return choices


def target_label(target: str, *, tenant=None) -> str:
    """A readable name for a target ("SmolLM2 135M (local) · tiny demo model, ...")."""
    try:
        pool_name, model = registry.split_target(target)
        return _label(registry.resolve_pool(pool_name, tenant=tenant), model)
    except Exception:  # noqa: BLE001
        return target


def target_note(target: str) -> str:
    """A plain warning to show next to answers from this target (the tiny default model), else ""."""
    try:
        pool_name, _model = registry.split_target(target)
        pool = registry.resolve_pool(pool_name, tenant=current_tenant())
    except Exception:  # noqa: BLE001
        return ""
    return _("Answers come from a tiny model meant for trying ragdesk out (English works best). "
             "Connect OpenAI or Ollama for real answers.") if pool.note else ""


# --- tenants' own providers -----------------------------------------------------------------------------------

def tenant_provider_list(*, tenant):
    with tenant_scope(tenant):
        return list(TenantProvider.objects.all())


def tenant_provider_get(*, tenant, provider_id: int) -> TenantProvider:
    return tenant_object_or_404(TenantProvider, tenant=tenant, pk=provider_id)


# --- staff status ---------------------------------------------------------------------------------------------

def _server_state(snapshot: dict) -> str:
    if snapshot["cooldown_s"]:
        return "cooling"
    if snapshot["check_error"]:
        return "down"
    if snapshot["consecutive_failures"]:
        return "degraded"
    if snapshot["checked_at"] or snapshot["ok_total"]:
        return "healthy"
    return "unknown"


def pool_status() -> list[dict]:
    """Every platform pool with each server's live state (healthy, cooling down, in flight, models...)."""
    pools = []
    for pool in registry.platform_pools():
        servers = []
        for server in pool.servers:
            try:
                snap = state.server_snapshot(server.sid)
            except Exception as exc:  # noqa: BLE001 - Redis trouble shows on the page, not as a 500
                snap = {"error": str(exc), "inflight": 0, "cooldown_s": 0, "models": None, "loaded": [],
                        "check_error": f"state unavailable: {exc}", "consecutive_failures": 0, "checked_at": None,
                        "ok_total": 0, "fail_total": 0, "errors": [], "latency_p50_ms": None,
                        "ttft_p50_ms": None, "version": "", "waiting": 0, "check_outcome": "",
                        "context_window": None}
            snap["state"] = _server_state(snap)
            # Every slot taken is busy, not down: requests wait in the queue for it.
            snap["busy"] = snap["inflight"] >= server.slots or snap["check_outcome"] == "busy"
            snap["checked_ago_s"] = round(time.time() - snap["checked_at"]) if snap.get("checked_at") else None
            for err in snap["errors"]:
                err["ago_s"] = round(time.time() - err.get("t", time.time()))
            servers.append({"name": server.name, "base_url": server.base_url, "slots": server.slots,
                            "weight": server.weight, "sid": server.sid, **snap})
        try:
            waiting = state.queue_length(pool.name)
        except Exception:  # noqa: BLE001
            waiting = 0
        pools.append({"name": pool.name, "kind": pool.kind, "dialect": pool.dialect, "strategy": pool.strategy,
                      "is_local": pool.is_local, "source": pool.source, "label": pool.label, "note": pool.note,
                      "provider": pool.provider, "models": _pool_models(pool), "servers": servers,
                      "waiting": waiting})
    return pools


def _target_problem(target: str) -> str:
    """Why a default target cannot answer (no such pool...), else ""."""
    try:
        pool_name, _model = registry.split_target(target)
        pool = registry.resolve_pool(pool_name, tenant=current_tenant())
    except Exception as exc:  # noqa: BLE001 - shown to staff as is
        return getattr(exc, "message", str(exc))
    if not pool.servers:
        return _("pool '%(pool)s' has no servers") % {"pool": pool.name}
    return ""


def runtime_summary() -> dict:
    runtime = conf.runtime_read(max_age_s=0)
    answer = default_answer_target()
    label = target_label(answer)
    return {"runtime": runtime, "answer_target": answer, "cheap_target": default_cheap_target(),
            "answer_label": "" if label == answer else label, "note": target_note(answer),
            "answer_problem": _target_problem(answer)}
