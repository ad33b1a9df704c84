"""Shared fixtures: two tenants with a user of each role, signed-in web clients and API clients.

Tests run against the real PostgreSQL+pgvector and Redis that scripts/env-run provides.
"""

from types import SimpleNamespace

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.middleware import SESSION_TENANT_KEY
from accounts.models import ApiKey, Role
from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from tests.factories.accounts import MembershipFactory, TenantFactory, UserFactory

ALL_SCOPES = list(ApiKey.Scope.values)

# Fake model servers and gateway fixtures (fake_llm, fake_ollama, fake_pool...): see tests/support/fixtures.py.
pytest_plugins = ["tests.support.fixtures"]


def _make_tenant(label: str) -> SimpleNamespace:
    tenant = TenantFactory(name=f"Tenant {label.upper()}", slug=f"tenant-{label}")
    team = SimpleNamespace(tenant=tenant)
    for role in Role.values:
        user = UserFactory(email=f"{role}@{label}.example.com")
        MembershipFactory(user=user, tenant=tenant, role=role)
        setattr(team, role, user)
    _key, team.api_key = api_key_create(tenant=tenant, name="all scopes", scopes=ALL_SCOPES)
    return team


@pytest.fixture
def tenant_a(db) -> SimpleNamespace:
    """Tenant A: `.tenant`, users `.owner`, `.admin`, `.member`, and `.api_key` (raw, all scopes)."""
    return _make_tenant("a")


@pytest.fixture
def tenant_b(db) -> SimpleNamespace:
    return _make_tenant("b")


def web_client(user, tenant) -> Client:
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_TENANT_KEY] = tenant.pk
    session.save()
    return client


def api_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.fixture
def client_a(tenant_a) -> Client:
    """Tenant A's owner, signed in."""
    return web_client(tenant_a.owner, tenant_a.tenant)


@pytest.fixture
def client_b(tenant_b) -> Client:
    return web_client(tenant_b.owner, tenant_b.tenant)


@pytest.fixture
def api_a(tenant_a) -> APIClient:
    return api_client(tenant_a.api_key)


@pytest.fixture
def api_b(tenant_b) -> APIClient:
    return api_client(tenant_b.api_key)


@pytest.fixture
def scope_a(tenant_a):
    """Run the test body inside tenant A's scope (services and managers need one)."""
    with tenant_scope(tenant_a.tenant):
        yield tenant_a


@pytest.fixture(autouse=True)
def _english_by_default():
    """A test that switched the language (a Korean page, a ko request) must not leak it into the next test."""
    from django.conf import settings
    from django.utils import translation

    translation.activate(settings.LANGUAGE_CODE)
    yield
    translation.activate(settings.LANGUAGE_CODE)
