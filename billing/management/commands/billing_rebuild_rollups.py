from django.core.management.base import CommandError

from accounts.models import Tenant
from billing.maintenance import rollups_rebuild
from config.commands import SchemaCommand


class Command(SchemaCommand):
    help = "Recompute the daily usage rollups and the quota counters' used amounts from the ledger."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="slug of one tenant (default: every tenant)")

    def handle(self, *args, tenant=None, **options):
        tenants = Tenant.objects.all()
        if tenant:
            tenants = tenants.filter(slug=tenant)
            if not tenants.exists():
                raise CommandError(f"no tenant with slug {tenant!r}")
        for t in tenants:
            rollups_rebuild(tenant=t)
            self.stdout.write(f"rebuilt {t.slug}")
