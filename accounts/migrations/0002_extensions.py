from django.contrib.postgres.operations import CreateExtension
from django.db import migrations


class Migration(migrations.Migration):
    """pgvector and trigram search. The setup script also installs them in template1 as superuser,
    so this is a no-op for the app's non-superuser role there; elsewhere a superuser must run it once."""

    dependencies = [("accounts", "0001_initial")]
    operations = [CreateExtension("vector"), CreateExtension("pg_trgm"), CreateExtension("unaccent")]
