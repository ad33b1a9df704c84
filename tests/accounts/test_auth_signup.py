"""Open sign-up is a setting (SIGNUP_OPEN); invitations work either way."""

import re

import pytest
from django.core import mail
from django.test import override_settings

from accounts.models import Membership, Role, User
from accounts.services import invitation_create

pytestmark = pytest.mark.django_db

SIGNUP = {"email": "stranger@example.com", "tenant_name": "Stranger Inc", "password": "a-long-pass-9876"}


@override_settings(SIGNUP_OPEN=False)
def test_closed_sign_up_shows_a_clear_page_and_creates_nothing(client):
    page = client.get("/accounts/signup/")
    assert page.status_code == 403
    assert "Sign-up is closed" in page.content.decode() and "invitation" in page.content.decode()
    assert client.post("/accounts/signup/", SIGNUP).status_code == 403
    assert not User.objects.filter(email="stranger@example.com").exists()
    assert "/accounts/signup/" not in client.get("/accounts/login/").content.decode()


@override_settings(SIGNUP_OPEN=False)
def test_closed_sign_up_still_lets_invited_people_in(client, tenant_a):
    invitation_create(tenant=tenant_a.tenant, invited_by=tenant_a.owner, email="invited@example.com", role=Role.MEMBER)
    path = re.search(r"https?://\S+?(/accounts/invite/\S+/)", mail.outbox[-1].body).group(1)

    response = client.post(path, {"name": "Invited", "password": "a-long-pass-9876"})
    assert response.status_code == 302
    membership = Membership.objects.get(user__email="invited@example.com")
    assert membership.tenant == tenant_a.tenant and membership.role == Role.MEMBER


@override_settings(SIGNUP_OPEN=False)
def test_closed_sign_up_offers_no_new_organisation_to_people_without_one(client):
    client.force_login(User.objects.create_user(email="loner@example.com", password="a-long-pass-9876"))
    page = client.get("/accounts/no-team/").content.decode()
    assert "/accounts/signup/" not in page and "invitation" in page


@override_settings(SIGNUP_OPEN=True)
def test_open_sign_up_creates_an_organisation(client):
    assert "/accounts/signup/" in client.get("/accounts/login/").content.decode()
    assert client.post("/accounts/signup/", SIGNUP).status_code == 302
    assert Membership.objects.get(user__email="stranger@example.com").role == Role.OWNER


@override_settings(SIGNUP_OPEN=False)
def test_the_closed_page_is_in_korean(client):
    assert "가입" in client.get("/accounts/signup/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
