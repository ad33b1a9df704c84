"""The ledger refuses UPDATEs (append-only), and the price table and plans start with the published rates."""

from datetime import datetime, timezone
from decimal import Decimal

from django.db import migrations

EFFECTIVE = datetime(2025, 1, 1, tzinfo=timezone.utc)

# USD per 1M tokens: input, cached input (None: billed as input), output.
PRICES = [
    ("openai", "gpt-5-pro", "15", None, "120"),
    ("openai", "gpt-5", "1.25", "0.125", "10"),
    ("openai", "gpt-5-chat-latest", "1.25", "0.125", "10"),
    ("openai", "gpt-5-codex", "1.25", "0.125", "10"),
    ("openai", "gpt-4o", "2.50", "1.25", "10"),
    ("openai", "gpt-4.1", "2.00", "0.50", "8"),
    ("openai", "gpt-5-mini", "0.25", "0.025", "2"),
    ("openai", "gpt-4.1-mini", "0.40", "0.10", "1.60"),
    ("openai", "gpt-4o-mini", "0.15", "0.075", "0.60"),
    ("openai", "gpt-5-nano", "0.05", "0.005", "0.40"),
    ("openai", "gpt-4.1-nano", "0.10", "0.025", "0.40"),
    ("gemini", "gemini-2.5-flash", "0.30", None, "2.50"),
    ("gemini", "gemini-2.5-flash-lite", "0.10", None, "0.40"),
    ("xai", "grok-4", "3", None, "15"),
    ("xai", "grok-4-fast", "0.20", None, "0.50"),
    ("xai", "grok-3", "3", None, "15"),
    ("xai", "grok-code-fast-1", "0.20", None, "1.50"),
]

PLANS = [
    # code, name, monthly tokens, monthly cost cap, rpm, tpm, enforcement, fee
    ("free", "Free", 1_000_000, None, None, None, "soft", "0"),
    ("team", "Team", 20_000_000, "100", 600, 2_000_000, "hard", "49"),
    ("unlimited", "Unlimited", None, None, None, None, "soft", "0"),
]


def seed(apps, schema_editor):
    Price = apps.get_model("billing", "Price")
    Plan = apps.get_model("billing", "Plan")
    for provider, model, inp, cached, out in PRICES:
        Price.objects.get_or_create(
            provider=provider, model=model, effective_from=EFFECTIVE,
            defaults={"input_per_mtok": Decimal(inp), "cached_input_per_mtok": cached and Decimal(cached),
                      "output_per_mtok": Decimal(out), "note": "published list price"},
        )
    Price.objects.get_or_create(
        provider="gemini", model="gemini-2.5-pro", effective_from=EFFECTIVE,
        defaults={"input_per_mtok": Decimal("1.25"), "output_per_mtok": Decimal("10"),
                  "tier_threshold_tokens": 200_000, "input_per_mtok_above": Decimal("2.50"),
                  "output_per_mtok_above": Decimal("15"), "note": "published list price; prompts > 200k tokens"},
    )
    for code, name, tokens, cost, rpm, tpm, enforcement, fee in PLANS:
        Plan.objects.get_or_create(code=code, defaults={
            "name": name, "monthly_token_allowance": tokens, "monthly_cost_cap": cost and Decimal(cost),
            "requests_per_minute": rpm, "tokens_per_minute": tpm, "enforcement": enforcement,
            "monthly_fee": Decimal(fee),
        })


APPEND_ONLY = """
CREATE OR REPLACE FUNCTION billing_usagerecord_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'billing_usagerecord is append-only: % refused', TG_OP;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS billing_usagerecord_no_update ON billing_usagerecord;
CREATE TRIGGER billing_usagerecord_no_update BEFORE UPDATE ON billing_usagerecord
  FOR EACH ROW EXECUTE FUNCTION billing_usagerecord_append_only();
"""
DROP_APPEND_ONLY = """
DROP TRIGGER IF EXISTS billing_usagerecord_no_update ON billing_usagerecord;
DROP FUNCTION IF EXISTS billing_usagerecord_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [
        migrations.RunSQL(APPEND_ONLY, DROP_APPEND_ONLY),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
