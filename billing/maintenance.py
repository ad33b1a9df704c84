"""Rebuild the rollups and quota counters from the ledger (the ledger is the truth; these are derived).

Needed after bulk loads (benchmarks, imports) or to verify the incremental rollups: `manage.py
billing_rebuild_rollups [--tenant SLUG]`. Runs in one transaction per tenant; ledger writes (of every tenant)
wait for it, so run it when traffic is low.
"""

from __future__ import annotations

from django.db import connection, transaction

from accounts.models import Tenant
from accounts.tenancy import tenant_scope

_REBUILD = [
    "DELETE FROM billing_usagedaily WHERE tenant_id = %(t)s",
    """INSERT INTO billing_usagedaily (tenant_id, day, dimension, provider, model, price_version_id, stage,
         assistant_id, api_key_id, calls, estimated_calls, input_tokens, cached_input_tokens, output_tokens, cost)
       SELECT tenant_id, day,
              CASE GROUPING(provider, model, price_id, stage, assistant_id, api_key_id)
                WHEN 7 THEN 'model' WHEN 59 THEN 'stage' WHEN 61 THEN 'assistant' ELSE 'api_key' END,
              COALESCE(provider, ''), COALESCE(model, ''), price_id, COALESCE(stage, ''), assistant_id, api_key_id,
              count(*), count(*) FILTER (WHERE estimated), sum(input_tokens), sum(cached_input_tokens),
              sum(output_tokens), sum(cost)
       FROM (SELECT *, (created_at AT TIME ZONE 'UTC')::date AS day FROM billing_usagerecord
             WHERE tenant_id = %(t)s) r
       GROUP BY tenant_id, day, GROUPING SETS ((provider, model, price_id), (stage), (assistant_id), (api_key_id))""",
    "DELETE FROM billing_usageconversation WHERE tenant_id = %(t)s",
    """INSERT INTO billing_usageconversation (tenant_id, conversation_id, first_day, last_day, calls, input_tokens,
         cached_input_tokens, output_tokens, cost)
       SELECT tenant_id, conversation_id, min((created_at AT TIME ZONE 'UTC')::date),
              max((created_at AT TIME ZONE 'UTC')::date), count(*), sum(input_tokens), sum(cached_input_tokens),
              sum(output_tokens), sum(cost)
       FROM billing_usagerecord WHERE tenant_id = %(t)s AND conversation_id IS NOT NULL
       GROUP BY 1, 2""",
    # Counters: "used" from the ledger per month and subject; reservations in flight are left alone.
    """UPDATE billing_quotacounter SET used_tokens = 0, used_cost = 0 WHERE tenant_id = %(t)s""",
    """INSERT INTO billing_quotacounter AS c (tenant_id, kind, subject_id, period_start, used_tokens, used_cost,
         reserved_tokens, reserved_cost, window_requests, window_tokens, notified_pct, hard)
       SELECT %(t)s, kind, subject_id, period_start, sum(tokens), sum(cost), 0, 0, 0, 0, 0, false
       FROM (
         SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS period_start,
                input_tokens + output_tokens AS tokens, cost, api_key_id, user_id
         FROM billing_usagerecord WHERE tenant_id = %(t)s
       ) r
       CROSS JOIN LATERAL (VALUES ('tenant', 0::bigint), ('api_key', r.api_key_id), ('user', r.user_id))
         AS s(kind, subject_id)
       WHERE s.subject_id IS NOT NULL
       GROUP BY kind, subject_id, period_start
       ON CONFLICT ON CONSTRAINT billing_counter_key DO UPDATE SET
         used_tokens = EXCLUDED.used_tokens, used_cost = EXCLUDED.used_cost""",
]


def rollups_rebuild(*, tenant: Tenant) -> None:
    with tenant_scope(tenant), transaction.atomic(), connection.cursor() as cursor:
        # Ledger writes are single statements that take all their table locks when they start, so locking the
        # derived tables up front makes every write land wholly before or wholly after the rebuild (no deadlock).
        cursor.execute("LOCK TABLE billing_quotacounter, billing_usagedaily, billing_usageconversation "
                       "IN SHARE ROW EXCLUSIVE MODE")
        for statement in _REBUILD:
            cursor.execute(statement, {"t": tenant.pk})
