"""The strict Content-Security-Policy in a real browser: every main page (the chat, the knowledge pages, the API
docs, the admin) loads and works with no policy violation, and the behaviour moved out of inline handlers
(confirmations, auto-submitting selects, copy buttons, the conversation search) still works."""

from __future__ import annotations

import pytest

from accounts.tenancy import tenant_scope
from tests.chat.live import asgi_server, backend_pids, close_new_connections
from tests.factories.chat import AnswerFactory
from tests.factories.knowledge import make_document, make_kb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]

PASSWORD = "pw-for-tests-123"  # tests.factories.accounts.UserFactory
# Runs in the page before its own scripts (browser-injected scripts are not subject to the page's CSP).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
    `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
"""


def visit(page, url: str, ready: str = "main") -> list[str]:
    response = page.goto(url)
    assert response.status in (200, 404), (url, response.status)
    assert "script-src 'self'" in response.headers["content-security-policy"], url
    page.wait_for_selector(ready)
    page.wait_for_timeout(300)  # late requests (htmx polling, Swagger's schema fetch) report their violations too
    return page.evaluate("window.__violations")


def test_main_pages_work_under_the_policy(browser, tenant_a, tmp_path):
    owner = tenant_a.owner
    owner.is_staff = owner.is_superuser = True  # the admin and the model status pages too
    owner.save()
    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        kb = make_kb(tenant, name="Handbook")
        document = make_document(tenant, kb, name="policy.txt")
        answer = AnswerFactory(tenant=tenant, conversation__user=tenant_a.owner)
    before = backend_pids()
    try:
        with asgi_server() as url:
            context = browser.new_context(viewport={"width": 1280, "height": 820})
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
            context.add_init_script(RECORD_VIOLATIONS)
            page = context.new_page()
            page.set_default_timeout(30_000)
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: console.append(str(exc)))
            violations: dict[str, list[str]] = {}

            violations["login"] = visit(page, f"{url}/accounts/login/")
            page.fill("input[name=username]", owner.email)
            page.fill("input[name=password]", PASSWORD)
            page.click("main form button")
            page.wait_for_url(f"{url}/")

            pages = {
                "chat": (f"/chat/c/{answer.conversation_id}/", "#thread"),
                "knowledge": ("/knowledge/", "main"),
                "kb": (f"/knowledge/{kb.pk}/", "#documents"),
                "document": (f"/knowledge/documents/{document.pk}/", "main"),
                "retrieval": (f"/knowledge/search/{kb.pk}/", "main"),
                "usage": ("/usage/", "main"),
                "members": ("/accounts/settings/members/", "main"),
                "models": ("/llm/status/", "#llm-pools"),
                "api-docs": ("/api/docs/", "#swagger-ui .information-container"),
                "admin": ("/admin/", "#content"),
            }
            for name, (path, ready) in pages.items():
                violations[name] = visit(page, url + path, ready)
                page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)

            # The conversation search sends the open conversation (was an hx-vals "js:" expression, i.e. eval).
            page.goto(f"{url}/chat/c/{answer.conversation_id}/")
            with page.expect_request(lambda r: "/chat/conversations/" in r.url) as search:
                page.fill("#conversation-search", "refund")
            assert f"active={answer.conversation_id}" in search.value.url

            # Confirmations (were onsubmit handlers): dismissing one keeps the document.
            page.goto(f"{url}/knowledge/{kb.pk}/")
            dialogs: list[str] = []
            page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.locator("#documents form.inline button.danger").first.click()
            page.wait_for_timeout(300)
            assert dialogs and "policy.txt" in dialogs[0] and page.url == f"{url}/knowledge/{kb.pk}/"

            # The copy button of a new API key (was an inline script).
            page.goto(f"{url}/accounts/settings/api-keys/")
            page.fill("input[name=name]", "ci")
            page.click("main form.stack button.primary")
            page.click("#copy-secret")
            # A function, not an expression string: Playwright evals expression strings, which the CSP refuses.
            page.wait_for_function("() => document.getElementById('copy-secret').textContent === 'Copied'")
            assert page.evaluate("navigator.clipboard.readText()") == page.inner_text("#new-secret")
            violations["api-keys"] = page.evaluate("window.__violations")

            # The language select submits its form by itself (was an onchange handler).
            page.select_option("#lang", "ko")
            page.wait_for_selector("html[lang=ko]")
            violations["korean"] = page.evaluate("window.__violations")
            context.close()
    finally:
        close_new_connections(before)

    assert {name: found for name, found in violations.items() if found} == {}
    assert [line for line in console if "Content Security Policy" in line or "Refused to" in line] == []
