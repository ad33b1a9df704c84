import pytest

from billing.models import Price


@pytest.fixture
def seeded_prices(db):
    """The price table as the data migration seeds it (transactional tests truncate it: re-run the seed)."""
    if not Price.objects.exists():
        import importlib

        from django.apps import apps

        importlib.import_module("billing.migrations.0002_append_only_and_seed").seed(apps, None)
    return Price.objects.all()
