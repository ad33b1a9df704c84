"""Writes: health checks (Celery beat, the status page's "check now", the admin action) and tenants' own
OpenAI-compatible providers (stored with an encrypted key)."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.tenancy import tenant_scope
from llm import context, netguard, registry, state
from llm.models import PoolServer, TenantProvider
from llm.providers import ProviderError, adapter_for
from llm.providers.base import AddressBlocked
from llm.registry import PoolSpec, ServerSpec

logger = logging.getLogger(__name__)

def probe_outcome(exc: Exception | None, *, inflight: int) -> str:
    """What a failed (or passed) health check says about the server; see state.record_probe_sync.

    A check that times out while the server is generating for us is "busy", not "down": a single-slot llama.cpp
    answers nothing else until its answer is done. 429/503 say busy outright. Refusing the check (a bad key,
    4xx) is a configuration problem, which no cooldown fixes.
    """
    if exc is None:
        return state.PROBE_OK
    if isinstance(exc, TimeoutError) or (isinstance(exc, ProviderError) and exc.kind == "timeout"):
        return state.PROBE_BUSY if inflight else state.PROBE_FAILED
    if not isinstance(exc, ProviderError):
        return state.PROBE_FAILED
    if exc.kind == "connect":
        return state.PROBE_DOWN
    if exc.status in (408, 409, 429, 503):
        return state.PROBE_BUSY
    if not exc.server_fault:
        return state.PROBE_CLIENT
    return state.PROBE_FAILED


async def _probe_many(pairs: list[tuple[PoolSpec, ServerSpec]]) -> list[tuple[PoolSpec, ServerSpec, object, str,
                                                                              str]]:
    timeout = float(settings.LLM_PROBE_TIMEOUT_S)

    async def one(pool: PoolSpec, server: ServerSpec):
        busy_before = await _inflight(server.sid)
        failure: Exception | None = None
        found = None
        try:
            # The adapter bounds each HTTP call; this bounds the whole check (a few calls).
            async with asyncio.timeout(timeout * 3 + 1):
                found = await adapter_for(pool.kind).probe(server, timeout=timeout, dialect=pool.dialect)
        except ProviderError as exc:
            failure, error = exc, exc.message
            if exc.kind == "timeout":
                error = f"{server.name} did not answer the health check within {timeout:g}s"
        except TimeoutError as exc:
            failure, error = exc, f"{server.name} did not answer the health check within {timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - one odd server must not stop the round
            failure, error = exc, f"{server.name}: {type(exc).__name__}"
        if failure is None:
            return pool, server, found, "", state.PROBE_OK
        inflight = max(busy_before, await _inflight(server.sid))
        return pool, server, None, error, probe_outcome(failure, inflight=inflight)

    try:
        return await asyncio.gather(*(one(p, s) for p, s in pairs))
    finally:
        await state.close_loop_resources()


async def _inflight(sid: str) -> int:
    try:
        return await state.inflight(sid)
    except Exception:  # noqa: BLE001 - unknown counts as idle: a silent server is then a failure, as before
        return 0


def probe_servers(pairs: list[tuple[PoolSpec, ServerSpec]]):
    """[(pool, server, ProbeResult | None, error, outcome)] for each pair, probed concurrently."""
    if not pairs:
        return []
    return async_to_sync(_probe_many, force_new_loop=True)(pairs)


def health_check_all(*, pool_names: set[str] | None = None) -> list[dict]:
    """Probe every platform server once: discover models (/api/tags, /v1/models), what is loaded (/api/ps) and
    llama.cpp's context window (/props); end cooldowns of servers that answer, start one for servers that are
    down; a server busy generating is left alone. Returns one line per server."""
    registry.invalidate()
    pairs = [(pool, server) for pool in registry.platform_pools() for server in pool.servers
             if pool_names is None or pool.name in pool_names]
    report = []
    windows: dict[str, tuple[PoolSpec, list[int]]] = {}
    now = timezone.now()
    for pool, server, found, error, outcome in probe_servers(pairs):
        n_ctx = (getattr(found, "detail", None) or {}).get("n_ctx")
        state.record_probe_sync(server.sid, models=getattr(found, "models", None),
                                loaded=getattr(found, "loaded", None), version=getattr(found, "version", ""),
                                error=error, outcome=outcome, n_ctx=n_ctx)
        if n_ctx:
            windows.setdefault(pool.name, (pool, []))[1].append(n_ctx)
        if server.sid.startswith("db:"):
            fields = {"last_checked_at": now, "last_error": "" if outcome == state.PROBE_BUSY else error[:500]}
            if found is not None and found.models is not None:
                fields["discovered_models"] = sorted(found.models)
            PoolServer.objects.filter(pk=int(server.sid[3:])).update(**fields)
        if error:
            logger.warning("llm health check: %s/%s (%s): %s", pool.name, server.name, outcome, error)
        report.append({"pool": pool.name, "server": server.name, "outcome": outcome,
                       "error": "" if outcome == state.PROBE_BUSY else error,
                       "models": getattr(found, "models", None) or []})
    for pool, found_windows in windows.values():
        # llama.cpp's /props is the pool's window (the smallest, as a request may land on any server).
        context.remember(pool, context.ANY_MODEL, min(found_windows))
    state.forget_cached_info()
    return report


# --- tenants' own providers -----------------------------------------------------------------------------------

def _clean_models(models) -> list[str]:
    if isinstance(models, str):
        models = models.replace("\n", ",").split(",")
    cleaned = [m.strip() for m in (models or []) if isinstance(m, str) and m.strip()]
    if not cleaned:
        raise ValidationError({"models": _("Name at least one model, e.g. gpt-4o-mini.")})
    if len(cleaned) > 20 or any(len(m) > 100 for m in cleaned):
        raise ValidationError({"models": _("At most 20 model names of up to 100 characters.")})
    return list(dict.fromkeys(cleaned))


def tenant_provider_create(*, tenant, created_by=None, name: str, base_url: str, api_key: str, models,
                           self_hosted: bool = False, max_concurrency: int = 4) -> TenantProvider:
    if urlparse(base_url).scheme not in ("http", "https"):
        raise ValidationError({"base_url": _("Use an http:// or https:// URL.")})
    try:
        # Save time: a clear refusal. Every connection is checked again (llm/netguard.py), for DNS rebinding.
        netguard.check_url(base_url.strip())
    except ValueError as exc:
        raise ValidationError({"base_url": str(exc)}) from None
    with tenant_scope(tenant):
        provider = TenantProvider(tenant=tenant, name=name.strip().lower(), base_url=base_url.strip().rstrip("/"),
                                  models=_clean_models(models), self_hosted=self_hosted,
                                  max_concurrency=max_concurrency, created_by=created_by)
        provider.set_api_key(api_key.strip())
        provider.full_clean(exclude=["tenant", "created_by"])
        # Checked first rather than caught: a failed INSERT would leave the surrounding transaction unusable.
        if TenantProvider.objects.filter(name=provider.name).exists():
            raise ValidationError({"name": _("You already have a provider with this name.")})
        try:
            with transaction.atomic():
                provider.save()
        except IntegrityError:  # a concurrent request took the name
            raise ValidationError({"name": _("You already have a provider with this name.")}) from None
    return provider


def tenant_provider_delete(*, tenant, provider: TenantProvider) -> None:
    with tenant_scope(tenant):
        TenantProvider.objects.filter(pk=provider.pk).delete()


async def _check_provider(pool: PoolSpec, server: ServerSpec, timeout: float):
    try:
        async with asyncio.timeout(timeout * 3 + 1):
            return await adapter_for(pool.kind).probe(server, timeout=timeout, dialect=pool.dialect), None
    except Exception as exc:  # noqa: BLE001 - every failure becomes one of a few fixed answers
        return None, exc
    finally:
        await state.close_loop_resources()


def provider_test_verdict(exc: Exception | None, *, timeout: float) -> str:
    """What a tenant learns from a failed connection test: not allowed / refused / unreachable, with at most the
    HTTP status. Never the endpoint's words or a socket error: the answer must not help map a network."""
    if isinstance(exc, AddressBlocked):
        return _("Not allowed: %(why)s.") % {"why": netguard.NOT_ALLOWED}
    if isinstance(exc, TimeoutError) or (isinstance(exc, ProviderError) and exc.kind == "timeout"):
        return _("Unreachable: no answer within %(s)ss.") % {"s": f"{timeout:g}"}
    if isinstance(exc, ProviderError) and exc.kind == "connect":
        return _("Unreachable: no connection could be made.")
    if isinstance(exc, ProviderError) and exc.status in (401, 403):
        return _("Refused: the endpoint rejected the API key (HTTP %(status)s).") % {"status": exc.status}
    if isinstance(exc, ProviderError) and exc.status:
        return _("Refused: the endpoint answered HTTP %(status)s.") % {"status": exc.status}
    return _("Refused: the endpoint did not answer like an OpenAI-compatible API.")


def tenant_provider_test(*, tenant, provider: TenantProvider) -> tuple[bool, str]:
    """Ask the endpoint for its models with the stored key; remember the outcome. -> (ok, message)"""
    pool = registry.tenant_pool(provider)
    server = pool.servers[0]
    timeout = float(settings.LLM_PROBE_TIMEOUT_S)
    found, failure = async_to_sync(_check_provider, force_new_loop=True)(pool, server, timeout)
    error = provider_test_verdict(failure, timeout=timeout) if failure is not None else ""
    message = error
    if not error and found is not None and found.models:
        missing = [m for m in provider.models if m not in found.models]
        if missing:
            message = _("Connected, but the endpoint does not list: %(models)s") % {"models": ", ".join(missing)}
    with tenant_scope(tenant):
        TenantProvider.objects.filter(pk=provider.pk).update(last_checked_at=timezone.now(), last_error=message[:500])
    state.record_probe_sync(server.sid, models=getattr(found, "models", None), loaded=None, error=error,
                            outcome=probe_outcome(failure, inflight=0))
    if error:
        return False, error
    return True, message or _("Connected.")
