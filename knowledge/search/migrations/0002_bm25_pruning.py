"""Per-term bounds for top-k pruning, and posting blocks looked up by (KB, term, document)."""

from django.db import migrations, models


def fill_term_bounds(apps, schema_editor):
    # Imported when this migration runs, not each time Django loads the migration graph.
    from accounts.tenancy import system_scope

    with system_scope(), schema_editor.connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE search_termstat t SET max_tf = s.max_tf, min_length = s.min_length
            FROM (SELECT pb.kb_id, pb.term, MAX(tf) AS max_tf, MIN(len) AS min_length
                  FROM search_postingblock pb, unnest(pb.tfs, pb.lengths) AS u(tf, len)
                  GROUP BY pb.kb_id, pb.term) s
            WHERE t.kb_id = s.kb_id AND t.term = s.term
            """
        )


class Migration(migrations.Migration):
    dependencies = [("search", "0001_initial")]

    operations = [
        migrations.AddField(model_name="termstat", name="max_tf", field=models.IntegerField(blank=True, null=True)),
        migrations.AddField(model_name="termstat", name="min_length", field=models.IntegerField(blank=True, null=True)),
        migrations.AddIndex(
            model_name="postingblock",
            index=models.Index(fields=["kb", "term", "document"], name="search_posting_kb_term_doc"),
        ),
        migrations.RemoveIndex(model_name="postingblock", name="search_posting_kb_term"),
        migrations.RunPython(fill_term_bounds, migrations.RunPython.noop),
    ]
