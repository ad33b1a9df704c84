"""`manage.py tenant_create`: a tenant, its owner and optionally an API key from the command line (the first
tenant of an install whose sign-up is closed, or a deployment script's)."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import ApiKey, Membership, Role, Tenant, User
from accounts.tenancy import tenant_scope

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("tenant_create", *args, stdout=out)
    return out.getvalue()


def test_creates_tenant_owner_and_a_working_api_key(client):
    result = json.loads(run("--name", "Acme Drill", "--owner-email", "Owner@Acme.example", "--plan", "unlimited",
                            "--api-key", "ci", "--scopes", "read,chat", "--json"))
    tenant = Tenant.objects.get(pk=result["tenant_id"])
    owner = User.objects.get(email="owner@acme.example")
    assert (tenant.name, tenant.plan, result["slug"]) == ("Acme Drill", "unlimited", tenant.slug)
    assert Membership.objects.get(tenant=tenant, user=owner).role == Role.OWNER
    assert not owner.has_usable_password()
    with tenant_scope(tenant):
        assert ApiKey.objects.get(tenant=tenant).scopes == ["chat", "read"]
    me = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {result['api_key']}")
    assert me.status_code == 200 and me.json()["id"] == tenant.pk


def test_reuses_an_existing_owner_and_prints_no_key_unless_asked(tenant_a):
    owner = tenant_a.owner
    output = run("--name", "Second team", "--owner-email", owner.email)
    assert "API key" not in output
    assert set(Membership.objects.filter(user=owner, role=Role.OWNER).values_list("tenant__name", flat=True)) == {
        tenant_a.tenant.name, "Second team"}
    assert User.objects.get(pk=owner.pk).has_usable_password()  # an existing account keeps its password
