"""Exactness: concurrent chats through the real LLM gateway against fake Ollama servers that report known usage,
with injected failures, task retries and replayed reports. The ledger must match what the servers reported,
token for token, with no duplicates, and its rollups and quota counters must match the ledger.

Failures injected:
  * HTTP 500 before the first token: the gateway retries on another server within the same call;
  * the server dies mid-stream: the gateway bills the partial answer as an *estimate* (the server reported
    nothing) and the task is retried, which is a new provider call with its own idempotency key;
  * every completed call's usage is reported a second time under the same key (a retried recording step or a
    replayed stream), which must add nothing.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.db.models import Count, Sum

from accounts.tenancy import tenant_scope
from billing.models import Plan, QuotaCounter, QuotaReservation, UsageDaily, UsageRecord
from billing.services import subscription_set, usage_record
from billing.types import Stage, UsageContext
from tests.factories.billing import PlanFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

CHATS = 40
DIES = (0, 3, 2)  # mid-stream deaths injected per server
HTTP500 = (2, 0, 0)  # failures before the first token, per server (modes are per server)


@pytest.fixture
def fake_llm_config():
    return {"servers": 3, "slots": 2, "token_rate": 2000.0, "reply_tokens": 12, "die_after": 3}


def test_ledger_equals_what_the_servers_reported(tenant_a, fake_llm, settings):
    from llm.gateway import chat_sync
    from llm.types import ChatRequest, GenerationParams, ModelUnavailable, StreamInterrupted

    # Keep every server in rotation: server cooldowns are the gateway's business, not what is measured here.
    settings.LLM_FAILURES_BEFORE_COOLDOWN = 1000

    tenant = tenant_a.tenant
    # A hard plan with room to spare: every call really reserves, settles or releases.
    subscription_set(tenant=tenant, plan=PlanFactory(monthly_token_allowance=10**9, enforcement=Plan.Enforcement.HARD))
    for server, dies, errors in zip(fake_llm.servers, DIES, HTTP500, strict=True):
        if errors:
            server.fail("http500", times=errors)
        elif dies:
            server.fail("die", times=dies)
    lock = threading.Lock()
    interrupted, replays = [], []

    def task(i: int):
        try:
            attempt, waits = 0, 0
            while attempt < 4 and waits < 200:  # a Celery task with retries
                context = UsageContext(stage=Stage.ANSWER, idempotency_key=f"chat-{i}-attempt-{attempt}",
                                       user_id=tenant_a.owner.pk, assistant_id=1 + i % 3,
                                       conversation_id=100 + i % 7, message_id=1000 + i)
                request = ChatRequest(messages=[{"role": "user", "content": " ".join(["word"] * (1 + i % 9))}],
                                      params=GenerationParams(max_tokens=64))
                try:
                    result = chat_sync(tenant=tenant, target=fake_llm.target, request=request, usage=context)
                except StreamInterrupted:
                    with lock:
                        interrupted.append(context.idempotency_key)
                    attempt += 1  # the retry is a new provider call: a new key
                    continue
                except ModelUnavailable:  # nothing was billed: retry the same call later
                    waits += 1
                    time.sleep(0.05)
                    continue
                again = usage_record(tenant=tenant, context=context, provider=result.provider, model=result.model,
                                     server=result.server, usage=result.usage)
                with lock:
                    replays.append(again.was_duplicate)
                return result
            raise AssertionError(f"chat {i} never completed")
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(task, range(CHATS)))

    stats = fake_llm.stats()
    assert stats["completed"] == CHATS
    assert len(interrupted) == sum(DIES)
    assert replays == [True] * CHATS  # every replayed report was recognised
    with tenant_scope(tenant):
        reported = UsageRecord.objects.filter(estimated=False).aggregate(
            n=Count("id"), keys=Count("idempotency_key", distinct=True), inp=Sum("input_tokens"),
            out=Sum("output_tokens"))
        estimated = UsageRecord.objects.filter(estimated=True)
        ledger = UsageRecord.objects.aggregate(n=Count("id"), inp=Sum("input_tokens"), out=Sum("output_tokens"))
        daily = UsageDaily.objects.filter(dimension="stage").aggregate(n=Sum("calls"), inp=Sum("input_tokens"), out=Sum("output_tokens"),
                                             est=Sum("estimated_calls"))
        counter = QuotaCounter.objects.get(kind="tenant")
        open_reservations = QuotaReservation.objects.filter(state="open").count()
        estimated_keys = sorted(estimated.values_list("idempotency_key", flat=True))

    # What the servers reported, exactly, once per completed call.
    assert reported["n"] == reported["keys"] == CHATS
    assert reported["inp"] == stats["prompt_tokens"] == sum(r.usage.input_tokens for r in results)
    assert reported["out"] == stats["output_tokens"] == sum(r.usage.output_tokens for r in results)
    # Cut-off streams: one estimated record each (the partial answer), nothing else.
    assert estimated_keys == sorted(interrupted)
    # Rollups and quota counters agree with the ledger; every reservation was settled or released.
    assert (daily["n"], daily["inp"], daily["out"], daily["est"]) == (
        ledger["n"], ledger["inp"], ledger["out"], len(interrupted))
    assert counter.used_tokens == ledger["inp"] + ledger["out"]
    assert (counter.reserved_tokens, open_reservations) == (0, 0)
