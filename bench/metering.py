"""Metering benchmark: ledger write cost per call and the usage page with 1M ledger records.

    scripts/env-run python bench/metering.py            # uses (and creates) the database ragdesk_bench_metering
    METERING_BENCH_DB=ragdesk_bill METERING_RECORDS=1000000 scripts/env-run python bench/metering.py
    scripts/env-run python bench/metering.py --smoke    # 2,000 records, a few requests (ragdesk_bench_metering_smoke)

1. Loads METERING_RECORDS ledger records (default 1,000,000) with generate_series in one INSERT ... SELECT,
   spread over 10 teams; the benchmark team owns 80% of them, all in the last 30 days. Then rebuilds the rollups
   from the ledger (manage.py billing_rebuild_rollups does the same). Skipped when the data is already there.
2. Ledger writes: usage_record() on that 1M-row table, each settling a real reservation (a hard plan), p50/p95.
3. Usage page: GET /usage/ (whole page: queries + template + SVG) for the last 30 days (800k records in range)
   and for the current month, p95 over repeated requests; and GET /api/v1/usage for comparison.

Last line: JSON with ledger_write_p50_ms, ledger_write_p95_ms, usage_page_p95_ms, records.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import django
from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import pct, smoke_requested
from django.core.management import call_command
from django.db import connection
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Modules of the app are imported inside functions: they need django.setup(), which main() runs only after
# use_bench_database() has pointed the settings at the bench database.

SMOKE = smoke_requested(__doc__)
DB_NAME = os.environ.get("METERING_BENCH_DB", "ragdesk_bench_metering")
RECORDS = 2000 if SMOKE else int(os.environ.get("METERING_RECORDS", "1000000"))
WRITES = 10 if SMOKE else int(os.environ.get("METERING_WRITES", "400"))
PAGE_RUNS = 3 if SMOKE else int(os.environ.get("METERING_PAGE_RUNS", "30"))
TEAMS = 10
BENCH_SHARE = 0.8

# Stage -> (provider, model): realistic pairings, so rollups have the cardinality a real team produces.
CALL_KINDS = [
    ("answer", "openai", "gpt-4o"), ("answer", "ollama", "llama3.2"), ("answer", "openai", "gpt-5-mini"),
    ("condense", "openai", "gpt-4o-mini"), ("expansion", "openai", "gpt-4o-mini"),
    ("compression", "openai", "gpt-4o-mini"), ("embedding", "ollama", "bge-m3"), ("rerank", "ollama", "bge-reranker"),
]


def setup_data():
    from accounts.models import ApiKey, Membership, Role, Tenant, User
    from accounts.services import api_key_create
    from accounts.tenancy import system_scope, tenant_scope
    from billing.maintenance import rollups_rebuild
    from billing.models import UsageRecord

    call_command("migrate", verbosity=0, interactive=False)
    teams = []
    for i in range(TEAMS):
        tenant, created = Tenant.objects.get_or_create(slug=f"bench-team-{i}", defaults={"name": f"Bench team {i}"})
        if created:
            with tenant_scope(tenant):
                for k in range(4):
                    api_key_create(tenant=tenant, name=f"key {k}", scopes=["read", "chat", "admin"])
        teams.append(tenant)
    bench = teams[0]
    owner, _ = User.objects.get_or_create(email="bench-owner@example.com")
    Membership.objects.get_or_create(user=owner, tenant=bench, defaults={"role": Role.OWNER})
    with system_scope():
        have = UsageRecord.objects.count()
    if have >= RECORDS:
        print(f"ledger already holds {have:,} records", file=sys.stderr)
        return bench, owner, have
    with tenant_scope(bench):
        key_ids = list(ApiKey.objects.filter(tenant=bench).values_list("pk", flat=True))
    started = time.perf_counter()
    kinds = ", ".join(f"({i}, '{s}', '{p}', '{m}')" for i, (s, p, m) in enumerate(CALL_KINDS))
    missing = RECORDS - have
    bench_rows = int(missing * BENCH_SHARE)
    tenant_ids = [t.pk for t in teams]
    sql = f"""
    WITH kinds(k, stage, provider, model) AS (VALUES {kinds}),
    g AS (
      SELECT n,
             CASE WHEN n <= %(bench_rows)s THEN %(bench)s
                  ELSE (%(others)s::bigint[])[1 + (n %% %(n_others)s)] END AS tenant_id,
             -- a conversation's calls fall on one or two days, like real ones
             now() - ((((n / 37) * 7919) %% 30) * interval '1 day') - random() * interval '1 day' AS created_at,
             (floor(random() * {len(CALL_KINDS)}))::int AS k,
             1 + floor(random() * 20)::int AS assistant_id,
             (%(keys)s::bigint[])[1 + floor(random() * 5)::int] AS api_key_id,
             1 + (n / 37) AS conversation_id,
             n / 4 AS message_id,
             (200 + random() * 4000)::int AS input_tokens,
             (random() * 600)::int AS output_tokens
      FROM generate_series(%(start)s::bigint, %(end)s::bigint) AS n
    )
    INSERT INTO billing_usagerecord (tenant_id, created_at, stage, idempotency_key, user_id, api_key_id,
      assistant_id, conversation_id, message_id, document_id, provider, model, server, fallback_from,
      input_tokens, cached_input_tokens, output_tokens, estimated, latency_ms, price_id, price_tier, cost)
    SELECT g.tenant_id, g.created_at, kinds.stage, 'bench-' || g.n, NULL,
           CASE WHEN kinds.stage = 'embedding' THEN NULL ELSE g.api_key_id END,
           CASE WHEN kinds.stage = 'embedding' THEN NULL ELSE g.assistant_id END,
           CASE WHEN kinds.stage = 'embedding' THEN NULL ELSE g.conversation_id END,
           CASE WHEN kinds.stage = 'embedding' THEN NULL ELSE g.message_id END,
           CASE WHEN kinds.stage = 'embedding' THEN g.n %% 5000 ELSE NULL END,
           kinds.provider, kinds.model, 'bench-server', '',
           g.input_tokens, g.input_tokens / 4, CASE WHEN kinds.stage = 'embedding' THEN 0 ELSE g.output_tokens END,
           false, 300 + random() * 2000, p.id, 0,
           COALESCE(((g.input_tokens - g.input_tokens / 4) * p.input_per_mtok
                     + (g.input_tokens / 4) * COALESCE(p.cached_input_per_mtok, p.input_per_mtok)
                     + g.output_tokens * p.output_per_mtok) / 1000000, 0)
    FROM g JOIN kinds ON kinds.k = g.k
    LEFT JOIN LATERAL (SELECT * FROM billing_price pr WHERE pr.model = kinds.model
                       ORDER BY pr.effective_from DESC LIMIT 1) p ON true
    """
    chunk = 250_000
    with system_scope(), connection.cursor() as cursor:
        for start in range(have + 1, RECORDS + 1, chunk):
            end = min(start + chunk - 1, RECORDS)
            cursor.execute(sql, {"bench_rows": have + bench_rows, "bench": bench.pk, "others": tenant_ids[1:],
                                 "n_others": len(tenant_ids) - 1, "keys": [*key_ids, None],
                                 "start": start, "end": end})
            print(f"  inserted records {start:,}..{end:,}", file=sys.stderr)
        cursor.execute("ANALYZE billing_usagerecord")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    for tenant in teams:
        rollups_rebuild(tenant=tenant)
    with system_scope(), connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_usagedaily")
        cursor.execute("ANALYZE billing_usageconversation")
    print(f"loaded {RECORDS - have:,} records in {load_s:.1f}s, rollups rebuilt in "
          f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
    with system_scope():
        return bench, owner, UsageRecord.objects.count()


def bench_writes(bench):
    from billing.models import Plan
    from billing.services import quota_reserve, subscription_set, usage_record
    from billing.types import Usage, UsageContext

    plan, _ = Plan.objects.get_or_create(code="bench-hard", defaults={
        "name": "Bench (hard)", "monthly_token_allowance": 10**15, "enforcement": Plan.Enforcement.HARD})
    subscription_set(tenant=bench, plan=plan)
    run = uuid.uuid4().hex[:8]
    reserve_ms, record_ms = [], []
    for i in range(WRITES + 20):
        context = UsageContext(stage="answer", idempotency_key=f"write-{run}-{i}", assistant_id=1 + i % 20,
                               conversation_id=1 + i % 300, message_id=10**9 + i)
        t0 = time.perf_counter()
        reservation = quota_reserve(tenant=bench, context=context, provider="openai", model="gpt-4o",
                                    max_input_tokens=2000, max_output_tokens=500)
        t1 = time.perf_counter()
        usage_record(tenant=bench, context=context, provider="openai", model="gpt-4o", server="bench",
                     usage=Usage(input_tokens=1800, cached_input_tokens=600, output_tokens=321), latency_ms=900,
                     reservation=reservation)
        t2 = time.perf_counter()
        if i >= 20:  # warm-up
            reserve_ms.append((t1 - t0) * 1000)
            record_ms.append((t2 - t1) * 1000)
    return reserve_ms, record_ms


def bench_page(owner, bench):
    from accounts.middleware import SESSION_TENANT_KEY
    from accounts.services import api_key_create
    from accounts.tenancy import tenant_scope

    client = Client()
    client.force_login(owner)
    session = client.session
    session[SESSION_TENANT_KEY] = bench.pk
    session.save()
    with tenant_scope(bench):
        _key, raw = api_key_create(tenant=bench, name=f"bench {uuid.uuid4().hex[:6]}", scopes=["admin"])
    results = {}
    for label, url, kwargs in (
        ("usage page, last 30 days", "/usage/?period=last_30_days", {}),
        ("usage page, this month", "/usage/", {}),
        ("GET /api/v1/usage?group_by=model (30 days)", "/api/v1/usage?period=last_30_days&group_by=model",
         {"HTTP_AUTHORIZATION": f"Bearer {raw}"}),
    ):
        timings = []
        for i in range(PAGE_RUNS + 3):
            t0 = time.perf_counter()
            response = client.get(url, **kwargs)
            elapsed = (time.perf_counter() - t0) * 1000
            assert response.status_code == 200, (url, response.status_code, response.content[:300])
            if i >= 3:
                timings.append(elapsed)
        results[label] = timings
    return results


def main():
    use_bench_database(DB_NAME, smoke=SMOKE)
    django.setup()
    from accounts.tenancy import tenant_scope
    from billing.models import UsageDaily

    bench, owner, records = setup_data()
    with tenant_scope(bench):
        rollup_rows = UsageDaily.objects.filter(tenant=bench).count()
    reserve_ms, record_ms = bench_writes(bench)
    pages = bench_page(owner, bench)

    rows = [
        ("ledger write: usage_record (insert + rollups + settle)", record_ms),
        ("quota_reserve (hard plan, one conditional upsert)", reserve_ms),
        *pages.items(),
    ]
    print(f"\nmetering benchmark: {records:,} ledger records ({rollup_rows:,} daily rollup rows for the benchmark "
          f"team, {BENCH_SHARE:.0%} of the records)")
    print(f"{'measurement':58} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for label, values in rows:
        print(f"{label:58} {len(values):5d} {statistics.median(values):9.2f} {pct(values, 95):9.2f} "
              f"{max(values):9.2f}")
    page_p95 = max(pct(pages["usage page, last 30 days"], 95), pct(pages["usage page, this month"], 95))
    print("target: usage page p95 <= 200 ms" + (" (met)" if page_p95 <= 200 else " (MISSED)"))
    print(json.dumps({
        "ledger_write_p50_ms": round(statistics.median(record_ms), 3),
        "ledger_write_p95_ms": round(pct(record_ms, 95), 3),
        "usage_page_p95_ms": round(page_p95, 2),
        "records": records,
    }))


if __name__ == "__main__":
    main()
