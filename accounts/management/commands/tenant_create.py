"""Create a tenant and its owner from the command line, and optionally an API key: the first tenant of an install
whose sign-up is closed (production mode), or a deployment script's (scripts/stack-test).

    python manage.py tenant_create --name Acme --owner-email owner@acme.example --api-key ci --scopes read,write

The owner gets no password (an existing account keeps its own): set one with `manage.py changepassword EMAIL`, or
the sign-in page's password reset. The API key's secret is printed once; only its hash is kept.
"""

import json

from django.db import transaction

from accounts.models import User
from accounts.services import api_key_create, tenant_create
from config.commands import SchemaCommand


class Command(SchemaCommand):
    help = "Create a tenant with its owner (and an API key with --api-key); prints the key once."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="the tenant's name")
        parser.add_argument("--owner-email", required=True, help="its owner; an existing account is reused")
        parser.add_argument("--plan", default="free", help="billing plan code (free, ..., unlimited)")
        parser.add_argument("--api-key", metavar="NAME", default="", help="also create an API key of this name")
        parser.add_argument("--scopes", default="read,write,chat", help="the key's scopes, comma separated")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print one JSON object instead of text")

    def handle(self, *args, name, owner_email, plan, api_key, scopes, as_json, **options):
        with transaction.atomic():
            owner = User.objects.filter(email=owner_email.strip().lower()).first()
            if owner is None:
                owner = User.objects.create_user(email=owner_email, password=None)
            tenant = tenant_create(name=name, owner=owner, plan=plan)
            raw_key = ""
            if api_key:
                raw_key = api_key_create(tenant=tenant, name=api_key, scopes=scopes.split(","), created_by=owner)[1]
        result = {"tenant_id": tenant.pk, "slug": tenant.slug, "owner": owner.email, "api_key": raw_key}
        if as_json:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(self.style.SUCCESS(f"Tenant {tenant.name} ({tenant.slug}) created, owned by {owner.email}."))
        if raw_key:
            self.stdout.write(f"API key (shown once): {raw_key}")

