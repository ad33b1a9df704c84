"""Per-plan knowledge-base size: chunks per document and per team (knowledge.limits enforces them)."""

from django.db import migrations, models

# code: (chunks per document, chunks per team). "unlimited" keeps no plan limit.
LIMITS = {"free": (2_000, 20_000), "team": (10_000, 500_000)}


def seed(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for code, (per_document, per_tenant) in LIMITS.items():
        Plan.objects.filter(code=code, max_chunks_per_document__isnull=True,
                            max_chunks_per_tenant__isnull=True).update(
            max_chunks_per_document=per_document, max_chunks_per_tenant=per_tenant)


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_answer_modes")]

    operations = [
        migrations.AddField(
            model_name="plan", name="max_chunks_per_document",
            field=models.PositiveIntegerField(
                blank=True, null=True, verbose_name="chunks per document",
                help_text="A larger document fails with a message naming this limit. Empty: no plan limit."),
        ),
        migrations.AddField(
            model_name="plan", name="max_chunks_per_tenant",
            field=models.PositiveBigIntegerField(
                blank=True, null=True, verbose_name="chunks per team",
                help_text="All the team's knowledge bases together. Empty: no plan limit."),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
