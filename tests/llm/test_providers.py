"""Tenants' own OpenAI-compatible providers: the key is encrypted at rest, never shown again, never logged."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from accounts.tenancy import tenant_scope
from billing.types import UsageContext
from llm import crypto, gateway, selectors
from llm.models import TenantProvider
from llm.services import tenant_provider_create
from llm.types import ChatRequest, ModelUnavailable, PolicyViolation

SECRET = "sk-test-0123456789abcdef"


def make(team, fake=None, **kwargs):
    defaults = {"name": "mine", "base_url": (fake.url + "/v1") if fake else "https://api.openai.com/v1",
                "api_key": SECRET, "models": ["fake"]}
    defaults.update(kwargs)
    return tenant_provider_create(tenant=team.tenant, created_by=team.owner, **defaults)


def ask(tenant, target):
    return gateway.chat_sync(tenant=tenant, target=target,
                             request=ChatRequest(messages=[{"role": "user", "content": "hello"}]),
                             usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))


def test_secrets_round_trip_and_survive_key_rotation(settings):
    token = crypto.encrypt_secret(SECRET)
    assert SECRET not in token and crypto.decrypt_secret(token) == SECRET
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    from cryptography.fernet import Fernet

    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]  # new key first, old still reads
    assert crypto.decrypt_secret(token) == SECRET
    assert crypto.decrypt_secret(crypto.encrypt_secret("x")) == "x"
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt_secret(token)


def test_the_key_is_stored_encrypted_with_only_a_hint_kept(tenant_a):
    provider = make(tenant_a)
    with tenant_scope(tenant_a.tenant), connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted, api_key_hint FROM llm_tenantprovider WHERE id = %s", [provider.pk])
        stored, hint = cursor.fetchone()
    assert SECRET not in stored and crypto.decrypt_secret(stored) == SECRET
    assert hint == "…cdef"
    assert SECRET not in repr(provider) and SECRET not in str(provider)
    with pytest.raises(ValidationError) as caught:
        make(tenant_a)
    assert "name" in caught.value.message_dict


def test_models_and_url_are_validated(tenant_a):
    with pytest.raises(ValidationError) as caught:
        make(tenant_a, models=[])
    assert "models" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        make(tenant_a, name="ftp", base_url="ftp://example.com")
    assert "base_url" in caught.value.message_dict


def test_the_api_creates_lists_and_deletes_without_ever_returning_the_key(api_a, tenant_a):
    created = api_a.post("/api/v1/llm/providers", {"name": "openai-own", "base_url": "https://api.openai.com/v1",
                                                   "api_key": SECRET, "models": ["gpt-4o-mini"]}, format="json")
    assert created.status_code == 201, created.content
    assert SECRET not in created.content.decode() and created.json()["api_key_hint"] == "…cdef"
    assert created.json()["targets"] == ["tenant:openai-own/gpt-4o-mini"]
    listed = api_a.get("/api/v1/llm/providers")
    assert listed.status_code == 200 and SECRET not in listed.content.decode()
    assert [p["name"] for p in listed.json()] == ["openai-own"]
    bad = api_a.post("/api/v1/llm/providers", {"name": "x", "base_url": "https://e.com/v1", "models": []},
                     format="json")
    assert bad.status_code == 400 and "models" in bad.json()["error"]["fields"]
    duplicate = api_a.post("/api/v1/llm/providers", {"name": "openai-own", "base_url": "https://api.openai.com/v1",
                                                     "api_key": "k", "models": ["m"]}, format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()["error"]["fields"]
    pk = created.json()["id"]
    assert api_a.delete(f"/api/v1/llm/providers/{pk}").status_code == 204
    with tenant_scope(tenant_a.tenant):
        assert not TenantProvider.objects.exists()


def test_managing_providers_needs_the_admin_scope(tenant_a):
    from accounts.services import api_key_create
    from tests.conftest import api_client

    _key, raw = api_key_create(tenant=tenant_a.tenant, name="reader", scopes=["read", "chat"])
    assert api_client(raw).get("/api/v1/llm/providers").status_code == 403
    assert api_client(raw).get("/api/v1/llm/targets").status_code == 200


def test_the_connection_test_reports_a_wrong_key_without_echoing_it(api_a, tenant_a, fake_ollama, caplog,
                                                                   allow_loopback):
    fake = fake_ollama(api_key="the-right-one")
    provider = make(tenant_a, fake)
    caplog.set_level(logging.DEBUG)
    response = api_a.post(f"/api/v1/llm/providers/{provider.pk}/test")
    assert response.status_code == 200
    assert response.json()["ok"] is False and "rejected the API key (HTTP 401)" in response.json()["message"]
    assert SECRET not in response.content.decode() and SECRET not in caplog.text
    with tenant_scope(tenant_a.tenant):
        provider.refresh_from_db()
    assert "401" in provider.last_error and provider.last_checked_at is not None
    good = make(tenant_a, fake, name="good", api_key="the-right-one", models=["fake:latest"])
    assert api_a.post(f"/api/v1/llm/providers/{good.pk}/test").json() == {"ok": True, "message": "Connected."}
    typo = make(tenant_a, fake, name="typo", api_key="the-right-one", models=["gpt-4o-mni"])
    assert api_a.post(f"/api/v1/llm/providers/{typo.pk}/test").json() == {
        "ok": True, "message": "Connected, but the endpoint does not list: gpt-4o-mni"}


@pytest.mark.django_db(transaction=True)
def test_a_tenant_provider_answers_for_its_own_tenant_only(tenant_a, tenant_b, fake_ollama, no_billing, caplog,
                                                           allow_loopback):
    fake = fake_ollama(api_key=SECRET, reply_tokens=3)
    make(tenant_a, fake)
    caplog.set_level(logging.DEBUG)
    result = ask(tenant_a.tenant, "tenant:mine/fake")
    assert result.text == "w0 w1 w2" and result.server == "tenant:mine" and not result.is_local
    assert SECRET not in caplog.text
    with pytest.raises(ModelUnavailable, match="no provider named 'tenant:mine'"):
        ask(tenant_b.tenant, "tenant:mine/fake")


@pytest.mark.django_db(transaction=True)
def test_local_only_tenants_may_use_only_their_self_hosted_providers(tenant_a, fake_ollama, no_billing,
                                                                     allow_loopback):
    fake = fake_ollama(api_key=SECRET)
    make(tenant_a, fake, name="cloudy")
    make(tenant_a, fake, name="onprem", self_hosted=True)
    tenant = tenant_a.tenant
    tenant.data_policy = "local_only"
    tenant.save()
    with pytest.raises(PolicyViolation):
        ask(tenant, "tenant:cloudy/fake")
    assert ask(tenant, "tenant:onprem/fake").is_local
    values = [value for value, _label in selectors.target_choices(tenant=tenant)]
    assert "tenant:onprem/fake" in values and "tenant:cloudy/fake" not in values


def test_the_settings_page_adds_and_removes_a_provider_and_never_shows_the_key(client_a, tenant_a):
    page = client_a.get("/llm/providers/")
    assert page.status_code == 200 and b"api_key" in page.content
    response = client_a.post("/llm/providers/", {"name": "web", "base_url": "https://api.openai.com/v1",
                                                 "api_key": SECRET, "models": "gpt-4o-mini, gpt-4.1-mini",
                                                 "max_concurrency": 4})
    assert response.status_code == 302
    page = client_a.get("/llm/providers/")
    assert SECRET not in page.content.decode() and "…cdef" in page.content.decode()
    assert "tenant:web/gpt-4.1-mini" in page.content.decode()
    with tenant_scope(tenant_a.tenant):
        provider = TenantProvider.objects.get(name="web")
    assert provider.models == ["gpt-4o-mini", "gpt-4.1-mini"]
    assert client_a.post(f"/llm/providers/{provider.pk}/delete/").status_code == 302
    with tenant_scope(tenant_a.tenant):
        assert not TenantProvider.objects.exists()


def test_members_cannot_manage_providers(tenant_a):
    from tests.conftest import web_client

    assert web_client(tenant_a.member, tenant_a.tenant).get("/llm/providers/").status_code == 403
