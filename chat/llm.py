"""The LLM gateway as chat uses it: one seam, so the answer pipeline reads the same whatever serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from billing.types import UsageContext
from chat import aio
from llm import gateway, registry, selectors
from llm.providers import adapter_for
from llm.types import ChatRequest, ChatResult, GenerationParams


def answer_stream(*, tenant, target: str, request: ChatRequest, usage: UsageContext,
                  fallbacks=None) -> AsyncIterator[str | ChatResult]:
    """Text deltas as the model sends them, then one ChatResult (usage, model, server, timings)."""
    return gateway.chat_stream(tenant=tenant, target=target, request=request, usage=usage, fallbacks=fallbacks)


def complete(*, tenant, target: str, request: ChatRequest, usage: UsageContext) -> ChatResult:
    """A whole (short) answer, for helper calls such as condensing a follow-up question (sync callers)."""
    shared = aio.uses_shared_loop()

    async def call():
        try:
            return await gateway.chat(tenant=tenant, target=target, request=request, usage=usage)
        finally:
            if not shared:
                await gateway.aclose_clients()

    return aio.run(call)


async def close_loop_resources() -> None:
    """Close the gateway's pooled connections of the current event loop before the loop ends."""
    await gateway.aclose_clients()


def default_answer_target() -> str:
    """The platform's answer model ("<pool>/<model>"), or "" when none is configured."""
    return selectors.default_answer_target() or ""


def _pool_of(target: str, tenant=None):
    try:
        pool_name, _model = registry.split_target(target)
        return registry.resolve_pool(pool_name, tenant=tenant)
    except Exception:  # noqa: BLE001 - unknown, malformed or unconfigured: no pool
        return None


def context_window(*, tenant, target: str) -> int | None:
    """The model's real context window in tokens (None when unknown: the assistant's setting applies)."""
    return selectors.model_context_window(tenant=tenant, target=target)


def target_configured(target: str, *, tenant=None) -> bool:
    """True when `target` names a pool that exists (its servers may still be down)."""
    return bool(target) and _pool_of(target, tenant) is not None


def has_answer_model() -> bool:
    """True when the platform has an answer model worth defaulting to: one is configured and it is not the
    tiny offline demo model (whose answers are too poor to be the default)."""
    target = default_answer_target()
    pool = _pool_of(target) if target else None
    return pool is not None and not pool.note


def default_cheap_target() -> str:
    return selectors.default_cheap_target() or ""


def target_choices(*, tenant) -> list[tuple[str, str]]:
    """(target, label) pairs for pickers."""
    return list(selectors.target_choices(tenant=tenant))


def ignored_params(target: str, params: GenerationParams, *, tenant=None) -> tuple[str, list[str]]:
    """(provider label, parameters that provider ignores) for a target, as the gateway will map them."""
    try:
        pool_name, model = registry.split_target(target)
        pool = registry.resolve_pool(pool_name, tenant=tenant)
    except Exception:  # noqa: BLE001 - an unknown target gets no notes (the answer reports the real error)
        return "", []
    return pool.label or pool.provider, adapter_for(pool.kind).map_params(params, dialect=pool.dialect,
                                                                          model=model)[-1]


def target_note(target: str) -> str:
    """A plain note for answers from this target (e.g. the tiny offline demo model), else ""."""
    return selectors.target_note(target)


def target_label(target: str, *, tenant=None) -> str:
    return selectors.target_label(target, tenant=tenant)
