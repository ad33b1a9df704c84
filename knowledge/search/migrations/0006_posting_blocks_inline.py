"""A full posting block (~7.7 KB) stays in its row instead of TOAST: one page read per block, no TOAST index."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("search", "0005_delete_legacypostingblock")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE search_postingblock SET (toast_tuple_target = 8160); "
            "ALTER TABLE search_postingblock ALTER COLUMN data SET STORAGE MAIN",
            "ALTER TABLE search_postingblock RESET (toast_tuple_target); "
            "ALTER TABLE search_postingblock ALTER COLUMN data SET STORAGE EXTENDED",
        ),
    ]
