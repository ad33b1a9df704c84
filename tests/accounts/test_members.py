import re

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from accounts.models import Membership, Role, User
from accounts.services import membership_change_role, membership_remove
from tests.conftest import web_client

pytestmark = pytest.mark.django_db


def test_signup_creates_tenant_with_owner(client):
    response = client.post(
        "/accounts/signup/",
        {"email": "New@Example.com", "name": "New", "tenant_name": "Acme 주식회사", "password": "a-long-pass-9876"},
    )
    assert response.status_code == 302
    user = User.objects.get(email="new@example.com")
    membership = Membership.objects.get(user=user)
    assert membership.role == Role.OWNER and membership.tenant.name == "Acme 주식회사"
    assert client.get("/").status_code == 200


def test_signup_rejects_duplicate_email(client, tenant_a):
    response = client.post(
        "/accounts/signup/",
        {"email": tenant_a.owner.email, "tenant_name": "X", "password": "a-long-pass-9876"},
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_login_with_email(client, tenant_a):
    response = client.post("/accounts/login/", {"username": tenant_a.owner.email, "password": "pw-for-tests-123"})
    assert response.status_code == 302


def test_invite_and_accept(client_a, tenant_a, tenant_b, client):
    response = client_a.post("/accounts/settings/members/", {"email": "friend@example.com", "role": "admin"})
    assert response.status_code == 302
    link = re.search(r"http\S+/accounts/invite/(\S+)/", mail.outbox[-1].body)
    assert link
    newcomer = User.objects.create_user(email="friend@example.com", password="pw-for-tests-123")
    client.force_login(newcomer)
    path = f"/accounts/invite/{link.group(1)}/"
    assert client.get(path).status_code == 200
    assert client.post(path).status_code == 302
    assert Membership.objects.get(user=newcomer).role == Role.ADMIN
    assert client.post(path).status_code == 404  # used up


def test_expired_or_bogus_invitation_is_404(client, db):
    assert client.get("/accounts/invite/not-a-token/").status_code == 404


def test_last_owner_cannot_be_removed_or_demoted(tenant_a):
    owner = Membership.objects.get(tenant=tenant_a.tenant, user=tenant_a.owner)
    with pytest.raises(ValidationError):
        membership_remove(tenant=tenant_a.tenant, membership_id=owner.pk, actor=owner)
    with pytest.raises(ValidationError):
        membership_change_role(tenant=tenant_a.tenant, membership_id=owner.pk, role=Role.MEMBER, actor=owner)
    assert Membership.objects.get(pk=owner.pk).role == Role.OWNER


def test_admin_cannot_remove_owner_but_owner_can_remove_admin(tenant_a):
    admin = Membership.objects.get(tenant=tenant_a.tenant, user=tenant_a.admin)
    owner = Membership.objects.get(tenant=tenant_a.tenant, user=tenant_a.owner)
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        membership_remove(tenant=tenant_a.tenant, membership_id=owner.pk, actor=admin)
    membership_remove(tenant=tenant_a.tenant, membership_id=admin.pk, actor=owner)
    assert not Membership.objects.filter(pk=admin.pk).exists()


def test_user_in_two_tenants_can_switch(tenant_a, tenant_b):
    Membership.objects.create(user=tenant_a.member, tenant=tenant_b.tenant, role=Role.MEMBER)
    client = web_client(tenant_a.member, tenant_a.tenant)
    assert client.get("/").context["tenant"] == tenant_a.tenant
    assert client.post("/accounts/switch/", {"tenant_id": tenant_b.tenant.pk}).status_code == 302
    assert client.get("/").context["tenant"] == tenant_b.tenant


def test_cannot_switch_into_a_foreign_tenant(tenant_a, tenant_b):
    client = web_client(tenant_a.member, tenant_a.tenant)
    assert client.post("/accounts/switch/", {"tenant_id": tenant_b.tenant.pk}).status_code == 400
    assert client.get("/").context["tenant"] == tenant_a.tenant


def test_members_page_is_admin_only(tenant_a):
    assert web_client(tenant_a.member, tenant_a.tenant).get("/accounts/settings/members/").status_code == 403
    assert web_client(tenant_a.admin, tenant_a.tenant).get("/accounts/settings/members/").status_code == 200


def test_data_policy_setting(client_a, tenant_a):
    response = client_a.post("/accounts/settings/", {"data_policy": "local_only"})
    assert response.status_code == 302
    tenant_a.tenant.refresh_from_db()
    assert tenant_a.tenant.data_policy == "local_only"
    assert "Local models only" in client_a.get("/accounts/settings/").content.decode()


def test_newcomer_signs_up_through_the_invitation(client_a, tenant_a, client):
    client_a.post("/accounts/settings/members/", {"email": "newbie@example.com", "role": "member"})
    token = re.search(r"/accounts/invite/(\S+)/", mail.outbox[-1].body).group(1)
    path = f"/accounts/invite/{token}/"
    assert b"newbie@example.com" in client.get(path).content
    response = client.post(path, {"name": "Newbie", "password": "a-long-pass-9876"})
    assert response.status_code == 302
    membership = Membership.objects.get(user__email="newbie@example.com")
    assert membership.tenant == tenant_a.tenant and membership.role == Role.MEMBER
    assert Membership.objects.filter(user__email="newbie@example.com").count() == 1  # no own org created


def test_invitation_cannot_be_accepted_by_another_account(client_a, tenant_a, tenant_b):
    client_a.post("/accounts/settings/members/", {"email": "invited@example.com", "role": "admin"})
    token = re.search(r"/accounts/invite/(\S+)/", mail.outbox[-1].body).group(1)
    intruder = web_client(tenant_b.owner, tenant_b.tenant)  # someone the link was forwarded to
    path = f"/accounts/invite/{token}/"
    assert intruder.get(path).status_code == 403
    assert intruder.post(path).status_code == 403
    assert not Membership.objects.filter(user=tenant_b.owner, tenant=tenant_a.tenant).exists()
    with pytest.raises(ValidationError):
        from accounts.services import invitation_accept

        invitation_accept(raw_token=token, user=tenant_b.owner)
    # The invited address itself still gets in.
    invited = User.objects.create_user(email="Invited@Example.com", password="pw-for-tests-123")
    assert web_client_for(invited).post(path).status_code == 302
    assert Membership.objects.get(user=invited, tenant=tenant_a.tenant).role == Role.ADMIN


def web_client_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client
