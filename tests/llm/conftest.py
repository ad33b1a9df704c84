import pytest


@pytest.fixture(autouse=True)
def _clean_gateway_state(llm_state_clean):
    """Every gateway test starts with empty Redis state (cooldowns, leases, queues)."""
    yield


@pytest.fixture
def no_billing(monkeypatch):
    """Record what the gateway hands to billing instead of writing a ledger (for tests without a saved tenant)."""
    calls = {"reserve": [], "record": [], "release": []}

    def reserve(**kwargs):
        calls["reserve"].append(kwargs)
        return object()

    monkeypatch.setattr("billing.services.quota_reserve", reserve)
    monkeypatch.setattr("billing.services.usage_record", lambda **kw: calls["record"].append(kw))
    monkeypatch.setattr("billing.services.quota_release", lambda **kw: calls["release"].append(kw))
    return calls


@pytest.fixture
def allow_loopback(settings):
    """The fake model servers listen on 127.0.0.1: tenants' providers may reach them only when the operator allows
    it (llm/netguard.py), as an operator would for an on-premises server."""
    settings.LLM_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]
