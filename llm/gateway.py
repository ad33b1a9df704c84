"""The one way ragdesk calls a model: chat (streamed or whole) and embeddings, for every caller.

    async for item in chat_stream(tenant=t, target="local/smollm2", request=req, usage=ctx,
                                  fallbacks=["openai/gpt-4o-mini"]):
        if isinstance(item, str): send(item)          # text deltas as they arrive
        else: result = item                            # last: ChatResult (usage, server, ttft, ...)

For each call the gateway:
  1. validates the request (InvalidParams), applies the tenant's data policy (PolicyViolation: a local-only team
     is never routed to a cloud provider, fallbacks included) and resolves the target to a pool;
  2. reserves quota with billing (billing.errors.QuotaExceeded propagates before anything is sent);
  3. takes a slot on a healthy server (least busy / round robin / random, with counts shared through Redis),
     waiting in a bounded queue up to the pool's queue timeout;
  4. streams, bounded by connect / first-token / idle timeouts (Ollama is asked for the model's real window
     with options.num_ctx, llm/context.py). A server failure before the first token is noted against the server
     (cooldown after repeated failures, at once when nothing answers) and the request moves to another server
     (bounded attempts), then to the fallback targets; after the first token it ends the stream with
     StreamInterrupted, the partial text already yielded. Client errors (4xx, a rejected key, a prompt too long:
     ContextOverflow) are never noted against the server;
  5. records usage with billing (the provider's counts, or offline estimates marked estimated), or releases
     the reservation when nothing billable happened.

Sync code (Celery tasks) uses chat_sync / embed_sync. Async callers running their own event loop may call
`aclose_clients()` before that loop ends to close pooled connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import redis
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings

from billing import services as billing
from billing.types import Usage, UsageContext
from llm import context, registry, state
from llm.providers import Delta, Done, ProviderError, adapter_for
from llm.providers.ollama import normalize_model
from llm.registry import PoolSpec, ServerSpec
from llm.tokens import count_message_tokens, count_tokens
from llm.types import (
    ChatRequest,
    ChatResult,
    ContextOverflow,
    EmbedResult,
    ModelUnavailable,
    PolicyViolation,
    StreamInterrupted,
)

logger = logging.getLogger(__name__)

EMBED_BATCH = 64
EMBED_TIMEOUT_S = 120.0


# --- resolution and policy ------------------------------------------------------------------------------------

def _resolve_sync(target: str, tenant) -> tuple[PoolSpec, str]:
    pool_name, model = registry.split_target(target)
    return registry.resolve_pool(pool_name, tenant=tenant), model


async def _resolve(target: str, tenant) -> tuple[PoolSpec, str]:
    pool_name, model = registry.split_target(target)
    # Registered and recently read pools need no database; otherwise read it from a thread (the ORM is sync).
    pool = registry.resolve_pool_if_cached(pool_name)
    if pool is not None:
        return pool, model
    return await sync_to_async(_resolve_sync)(target, tenant)


def _policy_refusal(target: str) -> PolicyViolation:
    return PolicyViolation(
        f"'{target}' is a cloud provider and this team allows local models only "
        "(documents and questions never leave self-hosted servers)"
    )


async def _route(tenant, chain: list[str], index: int) -> tuple[PoolSpec | None, str, str]:
    """(pool, model, "") for a usable target, else (None, "", reason); reason "policy" for a refused fallback."""
    target = chain[index]
    try:
        pool, model = await _resolve(target, tenant)
    except ModelUnavailable as exc:
        if len(chain) == 1:
            raise
        return None, "", exc.message
    if not tenant.allows_model(is_local=pool.is_local):
        if index == 0:
            raise _policy_refusal(target)
        return None, "", "policy"
    return pool, model, ""


class ModelNotInstalled(ModelUnavailable):
    """No server of the pool has the model (known from discovery): more telling than any single server error."""


def _pool_key(pool: PoolSpec, model: str) -> str:
    base = pool.servers[0].sid if pool.source == "tenant" and pool.servers else pool.name
    return f"{base}|{model}"


async def _discover(pool: PoolSpec, servers: list[ServerSpec]) -> None:
    adapter = adapter_for(pool.kind)

    async def one(server: ServerSpec):
        try:
            found = await adapter.probe(server, timeout=min(pool.connect_timeout_s, 3.0))
        except ProviderError as exc:
            if exc.kind == "connect":
                await state.record_failure(server.sid, exc.message, immediate=True)
            return
        if found.models is not None:
            await state.store_models(server.sid, found.models, found.loaded)

    await asyncio.gather(*(one(s) for s in servers))


async def _acquire(pool: PoolSpec, model: str, exclude: set[str]) -> tuple[ServerSpec, state.Lease]:
    """A slot on a server that serves `model`; raises ModelUnavailable with the reason when there is none."""
    try:
        return await _acquire_slot(pool, model, exclude)
    except redis.RedisError as exc:
        raise ModelUnavailable(f"the gateway cannot reach Redis for slot counts: {exc}", retryable=True) from exc


async def _acquire_slot(pool: PoolSpec, model: str, exclude: set[str]) -> tuple[ServerSpec, state.Lease]:
    servers = [s for s in pool.servers if s.sid not in exclude]
    loaded: dict[str, bool] = {}
    if pool.kind == "ollama" and pool.servers:
        wanted = normalize_model(model)

        def not_installed(info) -> ModelNotInstalled | None:
            known = [info[s.sid][0] for s in pool.servers]
            if all(models is not None and wanted not in models for models in known):
                available = sorted({m for models in known for m in models})
                return ModelNotInstalled(
                    f"model '{model}' is not installed on any server of pool '{pool.name}'"
                    + (f" (available: {', '.join(available[:10])})" if available else "")
                )
            return None

        info = await state.servers_models([s.sid for s in pool.servers])
        serving = [s for s in servers if info[s.sid][0] is None or wanted in info[s.sid][0]]
        if not serving and servers and not exclude:
            await _discover(pool, servers)  # the model may have been pulled since the last health check
            state.forget_cached_info()
            info = await state.servers_models([s.sid for s in pool.servers])
            serving = [s for s in servers if info[s.sid][0] is None or wanted in info[s.sid][0]]
        if not serving and (error := not_installed(info)):
            raise error
        loaded = {s.sid: wanted in info[s.sid][1] for s in serving}
        servers = serving
    if not servers:
        raise ModelUnavailable(f"pool '{pool.name}' has no servers" if not exclude else "every server failed")
    candidates = [state.Candidate(sid=s.sid, slots=s.slots, weight=s.weight, loaded=loaded.get(s.sid, True))
                  for s in servers]
    try:
        lease = await state.acquire(pool_key=_pool_key(pool, model), candidates=candidates, strategy=pool.strategy,
                                    queue_timeout_s=pool.queue_timeout_s, max_queue=pool.max_queue)
    except state.NoHealthyServer:
        raise ModelUnavailable(f"every server of pool '{pool.name}' is cooling down after failures",
                               retryable=True) from None
    except state.QueueFull:
        raise ModelUnavailable(f"pool '{pool.name}' is overloaded ({pool.max_queue} requests waiting)",
                               retryable=True) from None
    except state.QueueTimeout:
        raise ModelUnavailable(
            f"no free server in pool '{pool.name}' within {pool.queue_timeout_s:g}s: every server was busy with "
            "other requests the whole time (none failed); try again shortly", retryable=True,
        ) from None
    server = next(s for s in servers if s.sid == lease.sid)
    return server, lease


# --- billing (sync services, called from a thread) ------------------------------------------------------------

async def _reserve(*, tenant, usage: UsageContext, pool: PoolSpec, model: str, input_tokens: int,
                   output_tokens: int):
    return await sync_to_async(billing.quota_reserve)(
        tenant=tenant, context=usage, provider=pool.provider, model=model, max_input_tokens=input_tokens,
        max_output_tokens=output_tokens,
    )


async def _abandon(slot: asyncio.Future) -> None:
    """Give up a slot request that is no longer wanted: cancel it, or release the slot it already got."""
    if not slot.done():
        slot.cancel()
    await asyncio.wait([slot])
    if slot.cancelled() or slot.exception() is not None:
        return  # nothing is held
    _server, lease = slot.result()
    await asyncio.shield(state.release(lease))


async def _release_reservation(reservation) -> None:
    if reservation is not None:
        await asyncio.shield(sync_to_async(billing.quota_release)(reservation=reservation))


async def _record(*, tenant, usage: UsageContext, pool: PoolSpec, model: str, server: ServerSpec, spent: Usage,
                  latency_ms: float, fallback_from: str, reservation) -> None:
    await asyncio.shield(sync_to_async(billing.usage_record)(
        tenant=tenant, context=usage, provider=pool.provider, model=model, server=server.name, usage=spent,
        latency_ms=latency_ms, fallback_from=fallback_from, reservation=reservation,
    ))


def _settle_usage(reported: Usage | None, *, prompt_estimate: int, text: str) -> Usage:
    if reported is None:
        return Usage(input_tokens=prompt_estimate, output_tokens=count_tokens(text), estimated=True)
    return reported


# --- chat -----------------------------------------------------------------------------------------------------

async def _with_ollama_window(pool: PoolSpec, model: str, request: ChatRequest) -> ChatRequest:
    """Ask Ollama for the model's real window (options.num_ctx) unless the caller chose one: without it Ollama
    runs at its own default (2048-4096) and cuts longer prompts from the start, system prompt first."""
    if pool.kind != "ollama" or request.params.num_ctx is not None:
        return request
    try:
        window = await context.window_async(pool, model)
    except Exception as exc:  # noqa: BLE001 - without a known window the request goes as the caller made it
        logger.warning("llm: context window of %s/%s unknown: %s", pool.name, model, exc)
        return request
    if not window:
        return request
    return replace(request, params=replace(request.params, num_ctx=window))


def _overflow(target: str, exc: ProviderError) -> ContextOverflow:
    size = f" of {exc.context_window} tokens" if exc.context_window else ""
    return ContextOverflow(f"the prompt is too long for the context window{size} of '{target}': {exc.message}",
                           context_window=exc.context_window, prompt_tokens=exc.prompt_tokens)


async def chat_stream(*, tenant, target: str, request: ChatRequest, usage: UsageContext,
                      fallbacks: list[str] | None = None) -> AsyncIterator[str | ChatResult]:
    """Text deltas, then one ChatResult. See the module docstring for the failure rules."""
    request.validate()
    started = time.perf_counter()
    chain = [target, *(fallbacks or [])]
    prompt_estimate = count_message_tokens(request.messages)
    max_output = request.params.max_tokens or settings.LLM_RESERVE_OUTPUT_TOKENS
    failures: list[str] = []
    refused_by_policy: list[str] = []
    attempts_total = 0

    for index, current in enumerate(chain):
        pool, model, error = await _route(tenant, chain, index)
        if pool is None:
            if error == "policy":
                refused_by_policy.append(current)
            else:
                failures.append(f"{current}: {error}")
            continue
        adapter = adapter_for(pool.kind)
        ignored = adapter.map_params(request.params, dialect=pool.dialect, model=model)[-1]
        sent = await _with_ollama_window(pool, model, request)
        # Quota and the first slot are sought together (both are round trips); the quota answer comes first.
        first_slot = asyncio.ensure_future(_acquire(pool, model, set()))
        try:
            reservation = await _reserve(tenant=tenant, usage=usage, pool=pool, model=model,
                                         input_tokens=prompt_estimate, output_tokens=max_output)
        except BaseException:
            await _abandon(first_slot)
            raise
        billed = False
        tried: set[str] = set()
        last_error = ""
        try:
            while len(tried) < pool.max_attempts:
                try:
                    if first_slot is not None:
                        slot, first_slot = first_slot, None
                        server, lease = await slot
                    else:
                        server, lease = await _acquire(pool, model, tried)
                except ModelUnavailable as exc:
                    # Keep the server's own error from an earlier attempt unless this one says more.
                    if not last_error or isinstance(exc, ModelNotInstalled):
                        last_error = exc.message
                    break
                tried.add(server.sid)
                attempts_total += 1
                dispatched = time.perf_counter()
                parts: list[str] = []
                ttft_ms = None
                done: Done | None = None
                stream = adapter.stream_chat(server, model, sent, dialect=pool.dialect,
                                             connect_timeout=pool.connect_timeout_s)
                events = stream.__aiter__()
                finished = False
                try:
                    try:
                        while True:
                            if ttft_ms is None:
                                wait = pool.first_token_timeout_s - (time.perf_counter() - dispatched)
                            else:
                                wait = pool.idle_timeout_s
                            try:
                                async with asyncio.timeout(max(wait, 0.001)):
                                    event = await events.__anext__()
                            except StopAsyncIteration:
                                break
                            except TimeoutError:
                                what = ("no first token within {:g}s" if ttft_ms is None
                                        else "stream idle for {:g}s").format(
                                    pool.first_token_timeout_s if ttft_ms is None else pool.idle_timeout_s)
                                raise ProviderError(f"{server.name}: {what}", kind="timeout") from None
                            if isinstance(event, Delta):
                                if ttft_ms is None:
                                    ttft_ms = (time.perf_counter() - started) * 1000
                                parts.append(event.text)
                                yield event.text
                            else:
                                done = event
                    finally:
                        await stream.aclose()
                    if done is None:
                        raise ProviderError(f"{server.name} ended the stream before it was done", kind="stream")
                    finished = True
                except ProviderError as exc:
                    if exc.server_fault:
                        await state.record_failure(server.sid, exc.message, immediate=exc.kind == "connect")
                    await state.release(lease)
                    if exc.status == 404 and pool.kind == "ollama":
                        await _discover(pool, [server])
                    if ttft_ms is not None:
                        text = "".join(parts)
                        billed = True
                        await _record(tenant=tenant, usage=usage, pool=pool, model=model, server=server,
                                      spent=_settle_usage(None, prompt_estimate=prompt_estimate, text=text),
                                      latency_ms=(time.perf_counter() - started) * 1000,
                                      fallback_from=chain[0] if current != chain[0] else "", reservation=reservation)
                        raise StreamInterrupted(f"the answer was cut off: {exc.message}") from exc
                    if exc.kind == "context":
                        # The request's fault (no failure noted, no cooldown); another server or a fallback
                        # would need a shorter prompt too, so the caller shrinks it and asks again.
                        raise _overflow(current, exc) from exc
                    logger.warning("llm call failed before the first token: %s", exc.message)
                    last_error = exc.message
                    if not exc.retryable:
                        break
                    continue
                except BaseException:
                    # The caller went away (closed the stream, cancelled the task): free the slot, bill what ran.
                    if not finished:
                        await asyncio.shield(state.release(lease))
                        if ttft_ms is not None and not billed:
                            billed = True
                            await _record(tenant=tenant, usage=usage, pool=pool, model=model, server=server,
                                          spent=_settle_usage(None, prompt_estimate=prompt_estimate,
                                                              text="".join(parts)),
                                          latency_ms=(time.perf_counter() - started) * 1000,
                                          fallback_from=chain[0] if current != chain[0] else "",
                                          reservation=reservation)
                    raise
                # Success.
                text = "".join(parts)
                duration_ms = (time.perf_counter() - started) * 1000
                spent = _settle_usage(done.usage, prompt_estimate=prompt_estimate, text=text)
                fallback_from = chain[0] if current != chain[0] else ""
                billed = True
                await asyncio.gather(
                    state.release(lease, ok=True, ttft_ms=ttft_ms,
                                  duration_ms=(time.perf_counter() - dispatched) * 1000,
                                  model=normalize_model(model) if pool.kind == "ollama" else model),
                    _record(tenant=tenant, usage=usage, pool=pool, model=model, server=server, spent=spent,
                            latency_ms=duration_ms, fallback_from=fallback_from, reservation=reservation),
                )
                yield ChatResult(
                    text=text, usage=spent, provider=pool.provider, model=model, server=server.name,
                    ttft_ms=ttft_ms, duration_ms=duration_ms, finish_reason=done.finish_reason,
                    ignored_params=list(ignored), fallback_from=fallback_from, target=current,
                    attempts=attempts_total, is_local=pool.is_local,
                )
                return
        finally:
            if first_slot is not None:
                await _abandon(first_slot)
            if not billed:
                await _release_reservation(reservation)
        failures.append(f"{current}: {last_error or 'no server answered'}")

    if refused_by_policy:
        raise PolicyViolation(
            "; ".join(failures) + ("; " if failures else "")
            + f"fallback {', '.join(refused_by_policy)} not used: this team allows local models only"
        )
    raise ModelUnavailable("model unavailable: " + "; ".join(failures))


async def chat(*, tenant, target: str, request: ChatRequest, usage: UsageContext,
               fallbacks: list[str] | None = None) -> ChatResult:
    result = None
    async for item in chat_stream(tenant=tenant, target=target, request=request, usage=usage, fallbacks=fallbacks):
        if isinstance(item, ChatResult):
            result = item
    assert result is not None
    return result


async def _closing(fn, kwargs):
    try:
        return await fn(**kwargs)
    finally:
        await state.close_loop_resources()


def chat_sync(*, tenant, target: str, request: ChatRequest, usage: UsageContext,
              fallbacks: list[str] | None = None) -> ChatResult:
    """chat() for sync code (Celery tasks, management commands). Database work runs on the calling thread."""
    return async_to_sync(_closing, force_new_loop=True)(
        chat, {"tenant": tenant, "target": target, "request": request, "usage": usage, "fallbacks": fallbacks}
    )


async def aclose_clients() -> None:
    """Close this event loop's pooled Redis/HTTP clients (for callers that run their own loop)."""
    await state.close_loop_resources()


# --- embeddings -----------------------------------------------------------------------------------------------

async def _embed_batch(pool: PoolSpec, model: str, texts: list[str],
                       dimensions: int | None) -> tuple[list[list[float]], Usage | None, ServerSpec]:
    adapter = adapter_for(pool.kind)
    tried: set[str] = set()
    last_error = "no server answered"
    while len(tried) < pool.max_attempts:
        try:
            server, lease = await _acquire(pool, model, tried)
        except ModelUnavailable as exc:
            if tried and not isinstance(exc, ModelNotInstalled):
                break
            raise
        tried.add(server.sid)
        dispatched = time.perf_counter()
        try:
            async with asyncio.timeout(pool.first_token_timeout_s + EMBED_TIMEOUT_S):
                vectors, reported = await adapter.embed(server, model, texts, dimensions=dimensions,
                                                        connect_timeout=pool.connect_timeout_s, timeout=EMBED_TIMEOUT_S)
        except (ProviderError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                exc = ProviderError(f"{server.name}: embedding timed out", kind="timeout")
            if exc.server_fault:
                await state.record_failure(server.sid, exc.message, immediate=exc.kind == "connect")
            await state.release(lease)
            if not exc.retryable:  # a rejected key or request: another server or a later try would fare the same
                raise ModelUnavailable(f"the request was refused: {exc.message}") from None
            last_error = exc.message
            continue
        except BaseException:
            await asyncio.shield(state.release(lease))
            raise
        elapsed = (time.perf_counter() - dispatched) * 1000
        await state.release(lease, ok=True, ttft_ms=elapsed, duration_ms=elapsed,
                            model=normalize_model(model) if pool.kind == "ollama" else model)
        return vectors, reported, server
    raise ModelUnavailable(last_error, retryable=True)


async def embed(*, tenant, target: str, texts: list[str], usage: UsageContext,
                dimensions: int | None = None) -> EmbedResult:
    """Embed `texts` (Ollama /api/embed or OpenAI embeddings) under the same policy, slots and metering.

    `dimensions`: ask the model for shorter vectors (OpenAI's text-embedding-3 models). A failure is
    ModelUnavailable, `retryable` when trying again later may help (servers down or busy), not when the provider
    refused the request (a rejected key, a malformed request)."""
    started = time.perf_counter()
    pool, model = await _resolve(target, tenant)
    if not tenant.allows_model(is_local=pool.is_local):
        raise _policy_refusal(target)
    if not texts:
        return EmbedResult(vectors=[], usage=Usage(), provider=pool.provider, model=model, target=target,
                           is_local=pool.is_local)
    estimate = sum(count_tokens(t) for t in texts)
    reservation = await _reserve(tenant=tenant, usage=usage, pool=pool, model=model, input_tokens=estimate,
                                 output_tokens=0)
    vectors: list[list[float]] = []
    spent = Usage()
    server: ServerSpec | None = None
    try:
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start:start + EMBED_BATCH]
            try:
                batch_vectors, reported, server = await _embed_batch(pool, model, batch, dimensions)
            except ModelUnavailable as exc:
                raise ModelUnavailable(f"embedding with '{target}' failed: {exc.message}",
                                       retryable=exc.retryable) from None
            vectors += batch_vectors
            if reported is None:
                spent.input_tokens += sum(count_tokens(t) for t in batch)
                spent.estimated = True
            else:
                spent.input_tokens += reported.input_tokens
    finally:
        if server is None:
            await _release_reservation(reservation)
        else:
            await _record(tenant=tenant, usage=usage, pool=pool, model=model, server=server, spent=spent,
                          latency_ms=(time.perf_counter() - started) * 1000, fallback_from="",
                          reservation=reservation)
    return EmbedResult(vectors=vectors, usage=spent, provider=pool.provider, model=model, server=server.name,
                       target=target, is_local=pool.is_local, duration_ms=(time.perf_counter() - started) * 1000)


def embed_sync(*, tenant, target: str, texts: list[str], usage: UsageContext,
               dimensions: int | None = None) -> EmbedResult:
    return async_to_sync(_closing, force_new_loop=True)(
        embed, {"tenant": tenant, "target": target, "texts": texts, "usage": usage, "dimensions": dimensions}
    )
