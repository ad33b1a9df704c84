"""What a tenant learns from its provider's connection test and failed answers: connected / refused / unreachable /
not allowed with at most an HTTP status, never the endpoint's own words (which would make ragdesk an oracle for
whatever answers at that address)."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accounts.tenancy import tenant_scope
from billing.types import UsageContext
from llm import gateway
from llm.localserver import free_port
from llm.models import TenantProvider
from llm.services import tenant_provider_create
from llm.types import ChatRequest, ModelUnavailable

SECRET = "internal-detail-4f1c9e redis_version:7.2.4 /etc/passwd"


class Leaky(BaseHTTPRequestHandler):
    """Answers every request with an error whose body holds SECRET; /hop/... redirects to /internal."""

    seen: list[str] = []

    def _reply(self, status: int, body: bytes, content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        self.seen.append(self.path)
        if self.path.startswith("/hop/"):
            self._reply(302, b"", headers=[("Location", "/internal")])
        elif self.path.startswith("/events/") and self.path.endswith("/chat/completions"):
            body = f'data: {json.dumps({"error": {"message": SECRET, "type": "server_error"}})}\n\n'.encode()
            self._reply(200, body, "text/event-stream")
        elif self.path.endswith("/chat/completions"):
            self._reply(400, json.dumps({"error": {"message": SECRET, "type": "invalid_request_error"}}).encode())
        else:
            self._reply(500, json.dumps({"error": {"message": SECRET}}).encode())

    def do_GET(self):  # noqa: N802 - http.server's name
        self._handle()

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._handle()

    def log_message(self, *args):
        pass


@pytest.fixture
def leaky(allow_loopback):
    Leaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Leaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make(team, name, base_url):
    return tenant_provider_create(tenant=team.tenant, name=name, base_url=base_url, api_key="sk-x", models=["m"])


def test_the_connection_test_never_echoes_the_endpoints_body(api_a, client_a, tenant_a, leaky):
    provider = make(tenant_a, "leaky", leaky + "/v1")
    response = api_a.post(f"/api/v1/llm/providers/{provider.pk}/test")
    assert response.json() == {"ok": False, "message": "Refused: the endpoint answered HTTP 500."}
    assert "/v1/models" in Leaky.seen  # it really asked
    with tenant_scope(tenant_a.tenant):
        provider.refresh_from_db()
    assert SECRET not in provider.last_error
    page = client_a.get("/llm/providers/").content.decode()
    assert "answered HTTP 500" in page and SECRET not in page
    assert SECRET not in api_a.get("/api/v1/llm/providers").content.decode()


def test_redirects_are_not_followed(api_a, tenant_a, leaky):
    provider = make(tenant_a, "hop", leaky + "/hop/v1")
    result = api_a.post(f"/api/v1/llm/providers/{provider.pk}/test").json()
    assert result["ok"] is False and SECRET not in result["message"]
    assert "/internal" not in Leaky.seen


def test_a_closed_port_says_unreachable_and_nothing_more(api_a, tenant_a, allow_loopback):
    provider = make(tenant_a, "closed", f"http://127.0.0.1:{free_port()}/v1")
    assert api_a.post(f"/api/v1/llm/providers/{provider.pk}/test").json() == {
        "ok": False, "message": "Unreachable: no connection could be made."}


@pytest.mark.django_db(transaction=True)
def test_answers_through_a_tenant_provider_do_not_echo_its_errors(tenant_a, leaky, no_billing):
    make(tenant_a, "leaky", leaky + "/v1")
    make(tenant_a, "events", leaky + "/events/v1")
    for target in ("tenant:leaky/m", "tenant:events/m"):
        with pytest.raises(ModelUnavailable) as caught:
            gateway.chat_sync(tenant=tenant_a.tenant, target=target,
                              request=ChatRequest(messages=[{"role": "user", "content": "hi"}]),
                              usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))
        assert SECRET not in caught.value.message and "tenant:" in caught.value.message


def test_another_tenants_provider_is_a_404_everywhere(api_a, tenant_a, tenant_b):
    from accounts.services import api_key_create
    from tests.conftest import api_client

    provider = make(tenant_a, "mine", "https://api.openai.com/v1")
    _key, raw = api_key_create(tenant=tenant_b.tenant, name="b-admin", scopes=["admin"])
    other = api_client(raw)
    assert other.post(f"/api/v1/llm/providers/{provider.pk}/test").status_code == 404
    assert other.get(f"/api/v1/llm/providers/{provider.pk}").status_code == 404
    assert other.delete(f"/api/v1/llm/providers/{provider.pk}").status_code == 404
    with tenant_scope(tenant_a.tenant):
        assert TenantProvider.objects.filter(pk=provider.pk).exists()
