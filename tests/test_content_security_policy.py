"""The Content-Security-Policy is strict (no inline scripts, styles or eval; no framing) and the pages keep to it:
every template is free of inline scripts, event handlers and style attributes, and the main pages say so too."""

from html.parser import HTMLParser
from pathlib import Path

import pytest

from accounts.tenancy import tenant_scope
from tests.factories.chat import AnswerFactory
from tests.factories.knowledge import make_document, make_kb

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class InlineCode(HTMLParser):
    """Collects what a strict CSP would block: inline <script>/<style>, on* handlers, style attributes, and
    htmx attributes that evaluate JavaScript (hx-on, hx-vals/hx-headers with a js: prefix)."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and not attrs.get("src") and attrs.get("type") not in ("application/json",):
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs.items():
            if name.startswith("on") or name.startswith("hx-on") or name == "style":
                self.found.append(f"<{tag} {name}=...>")
            if name in ("hx-vals", "hx-headers", "hx-vars") and (value or "").lstrip().startswith(("js:", "javascript:")):
                self.found.append(f"<{tag} {name}=js:...>")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def test_no_template_has_inline_code():
    offenders = {
        str(path.relative_to(TEMPLATES)): found
        for path in TEMPLATES.rglob("*.html")
        if (found := inline_code(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_policy_is_strict(client, db):
    policy = dict(
        part.strip().split(" ", 1) for part in client.get("/accounts/login/")["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"  # no 'unsafe-inline', no eval
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'self'" and policy["form-action"] == "'self'"


@pytest.mark.django_db
def test_main_pages_carry_the_policy_and_no_inline_code(client_a, tenant_a):
    tenant = tenant_a.tenant
    tenant_a.owner.is_staff = tenant_a.owner.is_superuser = True
    tenant_a.owner.save()
    with tenant_scope(tenant):
        kb = make_kb(tenant)
        document = make_document(tenant, kb)
        answer = AnswerFactory(tenant=tenant, conversation__user=tenant_a.owner)
    pages = [
        "/", "/chat/", f"/chat/c/{answer.conversation_id}/", "/chat/assistants/", "/chat/assistants/new",
        "/knowledge/", "/knowledge/new/", f"/knowledge/{kb.pk}/", f"/knowledge/documents/{document.pk}/",
        f"/knowledge/search/{kb.pk}/", f"/knowledge/search/{kb.pk}/evaluation/", "/usage/", "/usage/statement/",
        "/usage/limits/", "/accounts/settings/", "/accounts/settings/members/", "/accounts/settings/api-keys/",
        "/llm/status/", "/llm/providers/", "/api/docs/", "/admin/", "/admin/accounts/user/",
        f"/admin/accounts/tenant/{tenant.pk}/change/", "/no-such-page/",
    ]
    for path in pages:
        response = client_a.get(path)
        assert response.status_code == (404 if path == "/no-such-page/" else 200), (path, response.status_code)
        assert "script-src 'self'" in response["Content-Security-Policy"], path
        assert inline_code(response.content.decode()) == [], path
    # The page that shows a new API key (with its copy button) once.
    created = client_a.post("/accounts/settings/api-keys/", {"name": "ci", "scopes": ["read"]})
    assert 'data-copy="new-secret"' in created.content.decode()
    assert inline_code(created.content.decode()) == []


@pytest.mark.django_db
def test_sign_in_pages_carry_the_policy_and_no_inline_code(client):
    for path in ["/accounts/login/", "/accounts/signup/", "/accounts/password-reset/", "/admin/login/"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"], path
        assert inline_code(response.content.decode()) == [], path
