"""Tenants' provider URLs cannot reach ragdesk's own network (server-side request forgery), at save time and at
every connection; the operator may allow networks; operator pools stay unrestricted."""

from __future__ import annotations

import uuid

import pytest

from accounts.tenancy import tenant_scope
from billing.types import UsageContext
from llm import context, gateway, netguard, registry
from llm.models import Pool, PoolServer, TenantProvider
from llm.services import tenant_provider_create
from llm.types import ChatRequest, ModelUnavailable

REFUSED_URLS = [
    "http://127.0.0.1:6379",  # Redis
    "http://127.0.0.1:54329/v1",  # PostgreSQL
    "http://10.1.2.3/v1",
    "http://172.16.0.1/v1",
    "http://192.168.1.1/v1",
    "http://100.64.0.1/v1",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data",  # cloud metadata
    "http://0.0.0.0:8000/v1",
    "http://[::1]:5432/v1",
    "http://[::ffff:127.0.0.1]/v1",
    "http://[::ffff:169.254.169.254]/v1",
    "http://[64:ff9b::a9fe:a9fe]/v1",  # NAT64 form of the metadata address
    "http://[fd00::1]/v1",  # IPv6 unique local
    "http://[fe80::1]/v1",
    "http://224.0.0.1/v1",
    "http://0x7f000001/v1",
    "http://2130706433/v1",
    "http://0177.0.0.1/v1",
    "http://127.1/v1",
    "http://localhost:8000/v1",
    "http://LOCALHOST./v1",
    "http://api.localhost/v1",
    "https://user@127.0.0.1/v1",
]


def ask(tenant, target):
    return gateway.chat_sync(tenant=tenant, target=target,
                             request=ChatRequest(messages=[{"role": "user", "content": "hello"}]),
                             usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))


@pytest.fixture
def dns(monkeypatch):
    """A resolver the test controls: {name: [addresses]}; change it between save and connect to rebind."""
    table: dict[str, list[str]] = {}
    original = netguard.resolve_host

    def resolve(host, port):
        return list(table[host]) if host in table else original(host, port)

    monkeypatch.setattr(netguard, "resolve_host", resolve)
    return table


# --- addresses ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "100.100.1.1", "169.254.169.254", "0.0.0.0", "::",
                                     "::1", "::127.0.0.1", "2002:7f00:1::", "2002:a9fe:a9fe::", "fc00::1", "fe80::1",
                                     "fec0::1", "ff02::1", "239.1.1.1", "240.0.0.1", "255.255.255.255",
                                     "192.0.2.1", "2001:db8::1"])
def test_internal_and_special_addresses_are_blocked_in_every_form(address):
    import ipaddress

    assert netguard.blocked_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    import ipaddress

    assert netguard.blocked_reason(ipaddress.ip_address(address)) is None


# --- save time ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", REFUSED_URLS)
def test_the_api_refuses_provider_urls_that_reach_internal_addresses(api_a, tenant_a, url):
    response = api_a.post("/api/v1/llm/providers", {"name": "probe", "base_url": url, "api_key": "k",
                                                    "models": ["m"]}, format="json")
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["error"]["fields"]["base_url"])
    assert "not allowed" in message and netguard.SETTING in message
    with tenant_scope(tenant_a.tenant):
        assert not TenantProvider.objects.exists()


def test_a_name_that_resolves_to_a_private_address_is_refused_when_saved(api_a, dns):
    dns["gpu.corp.example"] = ["10.0.0.5"]
    dns["mixed.example"] = ["93.184.216.34", "127.0.0.1"]  # one internal address is enough
    for host in ("gpu.corp.example", "mixed.example"):
        response = api_a.post("/api/v1/llm/providers", {"name": "x", "base_url": f"https://{host}/v1",
                                                        "models": ["m"]}, format="json")
        assert response.status_code == 400
        assert "not allowed" in " ".join(response.json()["error"]["fields"]["base_url"])


def test_the_settings_page_refuses_the_metadata_address(client_a, tenant_a):
    response = client_a.post("/llm/providers/", {"name": "meta", "base_url": "http://169.254.169.254/v1",
                                                 "api_key": "k", "models": "m", "max_concurrency": 4})
    assert response.status_code == 200 and "not allowed" in response.content.decode()
    with tenant_scope(tenant_a.tenant):
        assert not TenantProvider.objects.exists()


def test_the_operator_setting_allows_listed_networks_only(api_a, settings):
    settings.LLM_ALLOWED_PRIVATE_NETWORKS = ["10.0.0.0/8", "127.0.0.1/32"]
    for name, url in (("onprem", "http://10.1.2.3:8000/v1"), ("here", "http://127.0.0.1:8000/v1"),
                      ("mapped", "http://[::ffff:127.0.0.1]:8000/v1")):
        response = api_a.post("/api/v1/llm/providers", {"name": name, "base_url": url, "models": ["m"]},
                              format="json")
        assert response.status_code == 201, response.content
    for url in ("http://127.0.0.2/v1", "http://192.168.0.10/v1", "http://169.254.169.254/v1"):
        response = api_a.post("/api/v1/llm/providers", {"name": "no", "base_url": url, "models": ["m"]},
                              format="json")
        assert response.status_code == 400, url


def test_public_addresses_and_unresolvable_names_are_accepted(tenant_a, dns):
    dns["api.example.com"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    for name, url in (("pub", "https://api.example.com/v1"), ("ip", "https://8.8.8.8/v1"),
                      ("later", "https://not-resolvable-now.invalid/v1")):
        tenant_provider_create(tenant=tenant_a.tenant, name=name, base_url=url, api_key="", models=["m"])


# --- connect time ---------------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_dns_rebinding_to_loopback_is_refused_at_connect_time(api_a, tenant_a, fake_ollama, dns, no_billing):
    fake = fake_ollama()
    dns["rebind.example"] = ["93.184.216.34"]  # public when saved...
    provider = tenant_provider_create(tenant=tenant_a.tenant, name="rebind", base_url=f"http://rebind.example:"
                                      f"{fake.port}/v1", api_key="", models=["fake"])
    dns["rebind.example"] = ["127.0.0.1"]  # ...ragdesk's own machine when connected to

    result = api_a.post(f"/api/v1/llm/providers/{provider.pk}/test").json()
    assert result["ok"] is False and result["message"].startswith("Not allowed:")
    with pytest.raises(ModelUnavailable, match="not allowed"):
        ask(tenant_a.tenant, "tenant:rebind/fake")
    with tenant_scope(tenant_a.tenant):
        pool = registry.tenant_pool(TenantProvider.objects.get(pk=provider.pk))
    context.discover(pool, "fake")  # context-window discovery goes through the same check
    assert fake.stats()["by_path"] == {}, "nothing may reach the internal server"


def test_a_guarded_client_connects_only_to_the_checked_address(settings, fake_ollama, dns):
    import httpx

    fake = fake_ollama()
    dns["svc.example"] = ["127.0.0.1"]
    with httpx.Client(transport=netguard.GuardedSyncTransport(ssl_context=httpx.create_ssl_context())) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            client.get(f"http://svc.example:{fake.port}/api/version")
        assert netguard.is_not_allowed(caught.value)
        settings.LLM_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]
        # Allowed: the name is kept in the Host header, the socket goes to the address that was checked.
        assert client.get(f"http://svc.example:{fake.port}/api/version").status_code == 200


# --- operator pools -------------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_operator_pools_on_private_addresses_stay_unrestricted(settings, fake_ollama, fake_pool, no_billing):
    from accounts.models import Tenant

    settings.LLM_ALLOWED_PRIVATE_NETWORKS = []
    fake = fake_ollama()
    tenant = Tenant(name="t", slug="t")
    target = fake_pool("static", [fake], kind="openai")  # registered in code (tests, benchmarks)
    assert ask(tenant, f"{target}/fake").text
    pool = Pool.objects.create(name="gpu", kind="openai", models=["fake"])  # staff, in the admin
    PoolServer.objects.create(pool=pool, name="box", base_url=fake.url + "/v1")
    registry.invalidate()
    assert ask(tenant, "gpu/fake").text
    settings.LOCAL_LLM_URL = fake.url  # the environment
    assert not registry.resolve_pool("local").servers[0].guarded
    assert ask(tenant, "local/fake").text
