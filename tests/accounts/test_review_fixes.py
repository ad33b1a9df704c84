"""Fixes from the QA review of the foundation (issue 2): each test failed before its fix."""

import re

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


def test_page_showing_a_new_secret_is_not_cached(client_a):
    response = client_a.post("/accounts/settings/api-keys/", {"name": "ci", "scopes": ["read"]})
    assert response.status_code == 200 and "rdk_" in response.context["new_secret"]
    assert "no-store" in response["Cache-Control"]


def test_api_response_with_a_new_secret_is_not_cached(api_a):
    response = api_a.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"]}, format="json")
    assert response.status_code == 201 and response.json()["key"].startswith("rdk_")
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("path, kind", [("/static/css/app.css", "text/css"),
                                         ("/static/vendor/htmx.min.js", "javascript")])
def test_the_app_serves_its_own_static_files(client, path, kind):
    """`make run` serves the app with uvicorn alone: without this every page had no stylesheet and no htmx."""
    response = client.get(path)
    assert response.status_code == 200 and kind in response["Content-Type"]


def test_api_key_list_names_scopes_in_the_page_language(client_a):
    client_a.post("/accounts/settings/api-keys/", {"name": "ci", "scopes": ["write", "read"]})
    page = client_a.get("/accounts/settings/api-keys/", HTTP_ACCEPT_LANGUAGE="ko")
    assert "읽기, 쓰기" in page.content.decode()


def test_revoking_a_key_stays_possible_on_a_phone(client_a):
    """The phone layout hides table columns from the 4th on; the status and revoke cells are kept."""
    client_a.post("/accounts/settings/api-keys/", {"name": "ci", "scopes": ["read"]})
    body = client_a.get("/accounts/settings/api-keys/").content.decode()
    assert re.search(r'<td class="keep">\s*<form method="post" action="/accounts/settings/api-keys/\d+/revoke/"', body)
