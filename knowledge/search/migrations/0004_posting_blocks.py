"""Posting blocks: up to postings.BLOCK_SIZE postings of one term per row, packed, instead of one row per
document and term; fresh blocks and their merge; documents remember their terms and chunks.

The old rows are converted without analysing any text again: each (KB, term)'s postings are gathered from its
per-document rows and cut into canonical blocks (what a rebuild writes).
"""

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models


def convert(apps, schema_editor):
    # Imported when this migration runs, not each time Django loads the migration graph.
    import numpy as np

    from accounts.tenancy import system_scope
    from knowledge.search.postings import Postings, cut

    connection = schema_editor.connection
    with system_scope():
        with connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT kb_id, tenant_id FROM search_legacypostingblock")
            kbs = cursor.fetchall()
        for kb_id, tenant_id in kbs:
            with connection.chunked_cursor() as source:
                source.execute(
                    "SELECT term, array_agg(u.c), array_agg(u.tf), array_agg(u.len) "
                    "FROM search_legacypostingblock, unnest(chunk_ids, tfs, lengths) AS u(c, tf, len) "
                    "WHERE kb_id = %s GROUP BY term",
                    [kb_id],
                )
                while rows := source.fetchmany(2000):
                    blocks = []
                    for term, ids, tfs, lengths in rows:
                        order = np.argsort(np.array(ids, dtype=np.int64), kind="stable")
                        postings = Postings(*(np.array(a, dtype=np.int64)[order] for a in (ids, tfs, lengths)))
                        blocks.extend((term, block) for block in cut(postings))
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "INSERT INTO search_postingblock (tenant_id, kb_id, term, first_chunk, last_chunk, size, "
                            "max_tf, min_length, fresh, data) SELECT %s, %s, b.term, b.first_chunk, b.last_chunk, "
                            "b.size, b.max_tf, b.min_length, false, b.data FROM unnest(%s::text[], %s::bigint[], "
                            "%s::bigint[], %s::int[], %s::int[], %s::int[], %s::bytea[]) "
                            "AS b(term, first_chunk, last_chunk, size, max_tf, min_length, data)",
                            [tenant_id, kb_id, [t for t, _b in blocks], [b.first_chunk for _t, b in blocks],
                             [b.last_chunk for _t, b in blocks], [b.size for _t, b in blocks],
                             [b.max_tf for _t, b in blocks], [b.min_length for _t, b in blocks],
                             [b.data for _t, b in blocks]],
                        )
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE search_indexeddocument d SET terms = s.terms FROM (SELECT document_id, "
                "array_agg(term ORDER BY term) AS terms FROM search_legacypostingblock GROUP BY document_id) s "
                "WHERE d.document_id = s.document_id"
            )
            cursor.execute(
                "UPDATE search_indexeddocument d SET chunk_ids = s.ids FROM (SELECT document_id, "
                "array_agg(DISTINCT c ORDER BY c) AS ids FROM search_legacypostingblock, unnest(chunk_ids) AS c "
                "GROUP BY document_id) s WHERE d.document_id = s.document_id"
            )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_extensions"),
        ("knowledge", "0002_hnsw_indexes"),
        ("search", "0003_evalrun_async"),
    ]

    operations = [
        migrations.RenameModel("PostingBlock", "LegacyPostingBlock"),
        # The renamed table keeps its indexes' names, which the new table's would collide with.
        migrations.RunSQL(
            """
            DO $$ DECLARE r record; BEGIN
                FOR r IN SELECT indexname FROM pg_indexes WHERE tablename = 'search_legacypostingblock' LOOP
                    EXECUTE format('ALTER INDEX %I RENAME TO %I', r.indexname, left('legacy_' || r.indexname, 63));
                END LOOP;
            END $$;
            """,
            migrations.RunSQL.noop,
        ),
        migrations.CreateModel(
            name="PostingBlock",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("term", models.CharField(db_collation="C", max_length=64)),
                ("first_chunk", models.BigIntegerField()),
                ("last_chunk", models.BigIntegerField()),
                ("size", models.IntegerField()),
                ("max_tf", models.IntegerField()),
                ("min_length", models.IntegerField()),
                ("fresh", models.BooleanField(default=False)),
                ("data", models.BinaryField()),
                ("kb", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                         to="knowledge.knowledgebase")),
                ("tenant", models.ForeignKey(editable=False, on_delete=django.db.models.deletion.CASCADE,
                                             related_name="+", to="accounts.tenant")),
            ],
            options={
                "indexes": [
                    models.Index(fields=["kb", "term", "first_chunk"], name="search_block_kb_term_first"),
                    models.Index(condition=models.Q(("fresh", True)), fields=["kb"], name="search_block_fresh"),
                ],
            },
        ),
        migrations.AddField(
            model_name="indexeddocument", name="terms",
            field=django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=64), default=list,
                                                            size=None),
        ),
        migrations.AddField(
            model_name="indexeddocument", name="chunk_ids",
            field=django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), default=list,
                                                            size=None),
        ),
        migrations.AddField(model_name="indexstats", name="fresh_documents", field=models.IntegerField(default=0)),
        migrations.AddField(model_name="indexstats", name="indexed_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.RunPython(convert, migrations.RunPython.noop),
    ]
