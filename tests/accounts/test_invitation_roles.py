"""Who may invite whom: an admin cannot hand out the owner role by invitation; an owner can."""

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied

from accounts.models import Invitation, Membership, Role
from accounts.services import invitation_create
from accounts.tenancy import tenant_scope
from tests.conftest import web_client

pytestmark = pytest.mark.django_db


def _pending(tenant):
    with tenant_scope(tenant):
        return list(Invitation.objects.values_list("email", "role"))


def test_admin_cannot_invite_an_owner(tenant_a):
    """An admin can't grant the owner role by changing a role, so not by inviting (a second address) either."""
    admin = web_client(tenant_a.admin, tenant_a.tenant)
    response = admin.post("/accounts/settings/members/", {"email": "boss@example.com", "role": "owner"})
    assert response.status_code == 200
    assert "owner" in response.content.decode().lower()
    assert _pending(tenant_a.tenant) == [] and not mail.outbox
    actor = Membership.objects.get(tenant=tenant_a.tenant, user=tenant_a.admin)
    with pytest.raises(PermissionDenied):
        invitation_create(tenant=tenant_a.tenant, invited_by=tenant_a.admin, email="b@example.com", role="owner",
                          actor=actor)


def test_owner_can_invite_an_owner(client_a, tenant_a):
    assert client_a.post("/accounts/settings/members/", {"email": "co@example.com", "role": "owner"}).status_code == 302
    assert _pending(tenant_a.tenant) == [("co@example.com", Role.OWNER)]


def test_admin_sees_no_owner_choice_in_the_invite_form(tenant_a):
    page = web_client(tenant_a.admin, tenant_a.tenant).get("/accounts/settings/members/")
    assert page.context["invite_form"].fields["role"].choices == [("admin", "Admin"), ("member", "Member")]
