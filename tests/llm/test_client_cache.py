"""Clients and cached facts are keyed by the address they concern, not by the server's id: a server whose URL
changed (the local model server restarted on another port, an admin edit) is reached at its new URL."""

from __future__ import annotations

import uuid

from asgiref.sync import async_to_sync

from accounts.models import Tenant
from billing.types import UsageContext
from llm import context, gateway, registry
from llm.localserver import free_port
from llm.registry import PoolSpec, ServerSpec
from llm.types import ChatRequest


def _pool(name: str, base_url: str, *, sid: str) -> PoolSpec:
    return PoolSpec(name=name, kind="openai", dialect="llamacpp", source="static", connect_timeout_s=1.0,
                    first_token_timeout_s=10.0, idle_timeout_s=10.0,
                    servers=(ServerSpec(sid=sid, name="llama.cpp", base_url=base_url),))


def test_the_next_call_goes_to_a_servers_new_url(fake_ollama, no_billing):
    first, second = fake_ollama(), fake_ollama()
    name, sid = f"moving-{uuid.uuid4().hex[:6]}", f"env:moving:{uuid.uuid4().hex[:6]}"
    tenant = Tenant(name="t", slug="t")

    async def ask() -> str:
        result = await gateway.chat(tenant=tenant, target=f"{name}/fake",
                                    request=ChatRequest(messages=[{"role": "user", "content": "hi"}]),
                                    usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))
        return result.text

    async def scenario():
        # One event loop for both calls, as in a web or worker process, where pooled clients live on.
        try:
            registry.register_pool(_pool(name, first.url + "/v1", sid=sid))
            assert await ask()
            registry.register_pool(_pool(name, second.url + "/v1", sid=sid))  # same server id, new address
            assert await ask()
        finally:
            await gateway.aclose_clients()

    try:
        async_to_sync(scenario, force_new_loop=True)()
    finally:
        registry.unregister_pool(name)
    assert first.stats()["requests"] == 1 and second.stats()["requests"] == 1


def test_a_context_window_found_at_one_url_is_not_used_for_another(settings):
    settings.LLM_PROBE_TIMEOUT_S = 0.5
    sid = f"env:moving:{uuid.uuid4().hex[:6]}"
    before = _pool("moving", f"http://127.0.0.1:{free_port()}/v1", sid=sid)
    after = _pool("moving", f"http://127.0.0.1:{free_port()}/v1", sid=sid)
    context.forget()
    context.remember(before, context.ANY_MODEL, 8192)
    assert context.window_sync(before, "smollm2") == 8192
    assert context.window_sync(after, "smollm2") is None  # asked anew (nothing answers there), not the old value
