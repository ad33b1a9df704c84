"""The per-document posting rows, converted into blocks by 0004."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("search", "0004_posting_blocks")]

    operations = [migrations.DeleteModel(name="LegacyPostingBlock")]
