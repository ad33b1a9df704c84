from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke
from accounts.tenancy import tenant_scope
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def test_create_stores_only_a_hash(tenant_a):
    key, raw = api_key_create(tenant=tenant_a.tenant, name="ci", scopes=["read"])
    assert raw.startswith(f"rdk_{key.prefix}_")
    with tenant_scope(tenant_a.tenant):
        stored = ApiKey.objects.get(pk=key.pk)
    assert raw not in (stored.key_hash, stored.prefix)
    assert stored.key_hash == ApiKey.hash_secret(raw)


def test_key_authenticates_as_its_tenant_and_records_use(tenant_a):
    key, raw = api_key_create(tenant=tenant_a.tenant, name="ci", scopes=["read"])
    response = api_client(raw).get("/api/v1/me")
    assert response.status_code == 200
    assert response.json()["slug"] == tenant_a.tenant.slug
    assert response.json()["scopes"] == ["read"]
    assert response["X-Request-ID"]
    with tenant_scope(tenant_a.tenant):
        assert ApiKey.objects.get(pk=key.pk).last_used_at is not None


@pytest.mark.parametrize(
    "header",
    ["Bearer rdk_nope", "Bearer rdk_abc_" + "x" * 40, "Token whatever", "Bearer ", "Bearer 한국어_키"],
)
def test_malformed_or_unknown_keys_get_401_json(tenant_a, header, client):
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["message"]


def test_missing_key_gets_401(client, db):
    response = client.get("/api/v1/me")
    assert response.status_code in (401, 403)
    assert "error" in response.json()


def test_revoked_key_is_refused(tenant_a):
    key, raw = api_key_create(tenant=tenant_a.tenant, name="ci", scopes=["read"])
    api_key_revoke(tenant=tenant_a.tenant, key_id=key.pk)
    response = api_client(raw).get("/api/v1/me")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_expired_key_is_refused(tenant_a):
    key, raw = api_key_create(
        tenant=tenant_a.tenant, name="ci", scopes=["read"], expires_at=timezone.now() + timedelta(seconds=30)
    )
    with tenant_scope(tenant_a.tenant):
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api_client(raw).get("/api/v1/me")
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_wrong_scope_is_403(tenant_a):
    _key, raw = api_key_create(tenant=tenant_a.tenant, name="reader", scopes=["read"])
    response = api_client(raw).get("/api/v1/api-keys")
    assert response.status_code == 403
    assert "admin" in response.json()["error"]["message"]


def test_api_key_lifecycle_over_the_api(api_a, tenant_a):
    created = api_a.post("/api/v1/api-keys", {"name": "deploy", "scopes": ["read", "chat"]}, format="json")
    assert created.status_code == 201, created.content
    secret = created.json()["key"]
    assert api_client(secret).get("/api/v1/me").status_code == 200
    listed = api_a.get("/api/v1/api-keys").json()["results"]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert api_a.delete(f"/api/v1/api-keys/{created.json()['id']}").status_code == 204
    assert api_client(secret).get("/api/v1/me").status_code == 401


def test_bad_scope_over_the_api_is_400_with_the_field(api_a):
    response = api_a.post("/api/v1/api-keys", {"name": "x", "scopes": ["root"]}, format="json")
    assert response.status_code == 400
    assert "scopes" in response.json()["error"]["fields"]


def test_other_tenants_key_cannot_revoke(api_b, tenant_a):
    key, raw = api_key_create(tenant=tenant_a.tenant, name="victim", scopes=["read"])
    assert api_b.delete(f"/api/v1/api-keys/{key.pk}").status_code == 404
    assert api_client(raw).get("/api/v1/me").status_code == 200


def test_web_page_shows_secret_once(client_a, tenant_a):
    response = client_a.post("/accounts/settings/api-keys/", {"name": "web", "scopes": ["read"]})
    assert response.status_code == 200
    secret = response.context["new_secret"]
    assert secret and secret.encode() in response.content
    again = client_a.get("/accounts/settings/api-keys/")
    assert secret.encode() not in again.content


def test_member_cannot_manage_keys(tenant_a):
    from tests.conftest import web_client

    response = web_client(tenant_a.member, tenant_a.tenant).get("/accounts/settings/api-keys/")
    assert response.status_code == 403


def test_session_cookie_without_csrf_cannot_call_the_api(tenant_a):
    from django.test import Client

    from accounts.middleware import SESSION_TENANT_KEY

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(tenant_a.owner)
    session = browser.session
    session[SESSION_TENANT_KEY] = tenant_a.tenant.pk
    session.save()
    assert browser.get("/api/v1/me").status_code == 200  # reads with the session are fine
    response = browser.post("/api/v1/api-keys", {"name": "csrf", "scopes": ["admin"]}, content_type="application/json")
    assert response.status_code == 403
    with tenant_scope(tenant_a.tenant):
        assert not ApiKey.objects.filter(name="csrf").exists()
