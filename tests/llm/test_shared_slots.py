"""In-flight counts live in Redis, so slot limits hold across processes (web and worker processes alike)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from asgiref.sync import async_to_sync

from accounts.models import Tenant
from billing.types import UsageContext
from llm import gateway, state
from llm.registry import PoolSpec, ServerSpec, register_pool, unregister_pool
from llm.types import ChatRequest

ROOT = Path(__file__).resolve().parents[2]

OTHER_PROCESS = textwrap.dedent("""
    import asyncio, json, os, sys, uuid
    import django
    django.setup()
    from unittest import mock
    from accounts.models import Tenant
    from billing.types import UsageContext
    from llm import gateway, registry, state
    from llm.registry import PoolSpec, ServerSpec
    from llm.types import ChatRequest

    spec = json.loads(sys.argv[1])
    registry.register_pool(PoolSpec(name="shared", kind="ollama", source="static", queue_timeout_s=30,
                                    servers=(ServerSpec(sid=spec["sid"], name="shared-0", base_url=spec["url"],
                                                        slots=1),)))

    async def main():
        if spec["mode"] == "hold":
            lease = await state.acquire(pool_key="shared|fake", candidates=[state.Candidate(sid=spec["sid"], slots=1)],
                                        strategy="least_busy", queue_timeout_s=5, max_queue=10)
            print("HELD", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await state.release(lease)
            print("RELEASED", flush=True)
            return
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        with mock.patch("billing.services.quota_reserve"), mock.patch("billing.services.usage_record"), \\
                mock.patch("billing.services.quota_release"):
            results = await asyncio.gather(*(gateway.chat(
                tenant=Tenant(name="o", slug="o"), target="shared/fake",
                request=ChatRequest(messages=[{"role": "user", "content": "hi"}]),
                usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex)) for _ in range(3)))
        print("DONE", len(results), flush=True)

    asyncio.run(main())
""")


def other_process(mode: str, sid: str, url: str) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", OTHER_PROCESS, json.dumps({"mode": mode, "sid": sid, "url": url})],
                            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_a_slot_held_by_another_process_is_seen_here_and_handed_over_when_freed(llm_state_clean):
    sid = f"shared:{uuid.uuid4().hex}"
    holder = other_process("hold", sid, "http://127.0.0.1:9")
    try:
        assert holder.stdout.readline().strip() == "HELD"
        assert state.server_snapshot(sid)["inflight"] == 1

        async def wait_for_the_slot():
            async def release_later():
                await asyncio.sleep(0.3)
                await asyncio.get_running_loop().run_in_executor(None, lambda: (holder.stdin.write("go\n"),
                                                                                holder.stdin.flush()))

            releaser = asyncio.create_task(release_later())
            lease = await state.acquire(pool_key="shared|fake", candidates=[state.Candidate(sid=sid, slots=1)],
                                        strategy="least_busy", queue_timeout_s=10, max_queue=10)
            await releaser
            await state.release(lease)
            await gateway.aclose_clients()
            return lease.sid

        assert async_to_sync(wait_for_the_slot, force_new_loop=True)() == sid
        assert holder.stdout.readline().strip() == "RELEASED"
    finally:
        holder.kill()
        holder.wait(5)


def test_two_processes_together_never_exceed_a_single_slot(fake_ollama, no_billing, llm_state_clean):
    fake = fake_ollama(slots=4, token_rate=100, reply_tokens=6)  # the server would take 4 at once
    sid = f"shared:{uuid.uuid4().hex}"
    register_pool(PoolSpec(name="shared", kind="ollama", source="static", queue_timeout_s=30,
                           servers=(ServerSpec(sid=sid, name="shared-0", base_url=fake.url, slots=1),)))
    other = other_process("chat", sid, fake.url)
    try:
        assert other.stdout.readline().strip() == "READY"
        other.stdin.write("go\n")
        other.stdin.flush()

        async def three():
            try:
                return await asyncio.gather(*(gateway.chat(
                    tenant=Tenant(name="m", slug="m"), target="shared/fake",
                    request=ChatRequest(messages=[{"role": "user", "content": "hi"}]),
                    usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex)) for _ in range(3)))
            finally:
                await gateway.aclose_clients()

        mine = async_to_sync(three, force_new_loop=True)()
        assert other.stdout.readline().strip() == "DONE 3"
    finally:
        unregister_pool("shared")
        other.kill()
        other.wait(5)
    assert len(mine) == 3
    stats = fake.stats()
    assert stats["completed"] == 6 and stats["max_active"] == 1
