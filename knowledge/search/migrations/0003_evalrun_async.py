"""Evaluation runs go through a worker: queued / running statuses, progress, the claim, timestamps.

Runs stored before this migration are all finished (done or failed); their progress is their question count.
"""

from django.db import migrations, models
from django.db.models import F


def finished_runs_progress(apps, schema_editor):
    # Imported when this migration runs, not each time Django loads the migration graph.
    from accounts.tenancy import system_scope

    EvalRun = apps.get_model("search", "EvalRun")
    with system_scope():
        EvalRun._base_manager.update(progress=F("question_count"), finished_at=F("created_at"))


class Migration(migrations.Migration):
    dependencies = [("search", "0002_bm25_pruning")]

    operations = [
        migrations.AlterField(
            model_name="evalrun", name="status",
            field=models.CharField(choices=[("queued", "Queued"), ("running", "Running"), ("done", "Done"),
                                            ("failed", "Failed")], default="queued", max_length=10),
        ),
        migrations.AddField(model_name="evalrun", name="progress", field=models.PositiveIntegerField(default=0)),
        migrations.AddField(model_name="evalrun", name="question_ids",
                            field=models.JSONField(blank=True, default=list)),
        migrations.AddField(model_name="evalrun", name="claim_token",
                            field=models.CharField(blank=True, max_length=32)),
        migrations.AddField(model_name="evalrun", name="attempts",
                            field=models.PositiveSmallIntegerField(default=0)),
        migrations.AddField(model_name="evalrun", name="started_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name="evalrun", name="heartbeat_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name="evalrun", name="finished_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.RunPython(finished_runs_progress, migrations.RunPython.noop),
    ]
