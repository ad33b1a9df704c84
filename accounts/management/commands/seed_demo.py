from django.conf import settings
from django.db import transaction

from accounts.models import Membership, Role, Tenant, User
from accounts.services import tenant_create
from accounts.signals import demo_tenant_ready
from accounts.tenancy import tenant_scope
from config.commands import SchemaCommand

DEMO_SLUG = "demo"


class Command(SchemaCommand):
    help = "Create (or refresh) the demo tenant and its owner account, then print the login."

    def handle(self, *args, **options):
        email, password = settings.DEMO_EMAIL, settings.DEMO_PASSWORD
        with transaction.atomic():
            user = User.objects.filter(email=email).first()
            if user is None:
                user = User.objects.create_user(email=email, password=password, name="Demo Owner", is_staff=True,
                                                is_superuser=True)
            tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
            if tenant is None:
                tenant = tenant_create(name="Demo", owner=user)
                Tenant.objects.filter(pk=tenant.pk).update(slug=DEMO_SLUG)
                tenant.refresh_from_db()
            Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.OWNER})
        with tenant_scope(tenant):
            demo_tenant_ready.send(sender=self.__class__, tenant=tenant, owner=user)
        self.stdout.write(self.style.SUCCESS(f"Demo tenant ready. Sign in as {email} / {password}"))
