from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('knowledge', '0003_ingest_queue_fields'),
    ]

    operations = [
        migrations.AddField(
            model_name='document',
            name='warnings',
            field=models.JSONField(blank=True, default=list),
        ),
    ]
