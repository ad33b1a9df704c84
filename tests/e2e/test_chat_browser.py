"""The whole product in a real browser: sign in, upload a document, wait for it to be indexed, ask, watch the
answer stream, open a citation, stop a long answer. Saves the README's screenshots to chat/screenshots/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from accounts.tenancy import tenant_scope
from chat.models import Message
from tests.chat.conftest import fake_llm, reply  # noqa: F401  (fixtures)
from tests.chat.live import live_stack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]

SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "chat" / "screenshots"
PASSWORD = "pw-for-tests-123"  # tests.factories.accounts.UserFactory
DOCUMENT = (
    "Refund policy\n\n"
    "Customers may ask for a refund within 30 days of purchase. Refunds go back to the original payment method "
    "within five business days. Gift cards cannot be refunded.\n\n"
    "Office hours\n\nThe support office in Seoul is open from 9:00 to 18:00 on weekdays.\n"
)
ANSWER = "Customers can ask for a refund within **30 days** of purchase [1]. Gift cards are excluded [1]."


def text_snapshots(page, selector: str, until: str, timeout: float = 60) -> list[str]:
    """The element's text each time it changes, until `until` appears in it."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = page.locator(selector).last.inner_text() if page.locator(selector).count() else ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if until in text:
            return seen
        page.wait_for_timeout(30)
    raise AssertionError(f"never saw {until!r}; saw {seen[-3:]}")


def record_step_labels(page) -> None:
    """Collect every progress label the pending answers show (window.stepLabels), however briefly."""
    page.evaluate("""() => {
        window.stepLabels = [];
        const seen = () => document.querySelectorAll('.answer-progress .step-label').forEach((el) => {
            const text = el.textContent.trim();
            if (text && window.stepLabels[window.stepLabels.length - 1] !== text) window.stepLabels.push(text);
        });
        new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")


def test_upload_ask_stream_cite_and_stop(browser, tenant_a, fake_llm, reply, tmp_path):  # noqa: F811
    from chat.services import assistant_create
    from knowledge.services import kb_create

    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        kb = kb_create(tenant=tenant, name="Support handbook", description="Policies for the support team")
        assistant_create(tenant=tenant, name="Support", answer_target=fake_llm.target,
                         cheap_target=fake_llm.target, is_default=True)
    reply(ANSWER)
    # Slow enough to watch the steps and then the tokens arrive.
    fake_llm.configure(token_rate=12, ttft_s=1.5)
    upload = tmp_path / "refund-policy.txt"
    upload.write_text(DOCUMENT, encoding="utf-8")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with live_stack(queues=("chat", "ingest", "default")) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

        page.goto(f"{url}/accounts/login/")
        page.fill("input[name=username]", tenant_a.owner.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("form button[type=submit], form button")
        page.wait_for_url(f"{url}/")

        # Upload a small document and wait until it is indexed.
        page.goto(f"{url}/knowledge/{kb.pk}/")
        page.set_input_files("#file-input", str(upload))
        try:
            page.wait_for_selector('tr[data-status="ready"]', timeout=120_000)
        except Exception:
            from knowledge.models import Document

            with tenant_scope(tenant):
                states = list(Document.objects.values_list("title", "status", "error"))
            page.screenshot(path=str(tmp_path / "upload-failed.png"), full_page=True)
            raise AssertionError(f"document not ready: {states}; errors: {errors}; "
                                 f"page: {page.inner_text('main')[:800]}") from None
        page.screenshot(path=str(SCREENSHOTS / "knowledge.png"), full_page=True)

        # Ask; the pending answer shows its steps, then streams in token by token and shows its sources.
        page.goto(f"{url}/chat/")
        record_step_labels(page)
        page.fill("#ask-input", "How long do customers have to ask for a refund?")
        page.keyboard.press("Enter")  # keyboard send
        page.wait_for_selector(".answer[aria-busy=true] .answer-progress")
        page.wait_for_function("() => document.querySelector('.answer-progress .step-label')?.textContent === 'Writing…'")
        page.screenshot(path=str(SCREENSHOTS / "chat-progress.png"), full_page=False)
        snapshots = text_snapshots(page, ".answer .answer-body", until="Gift cards are excluded")
        partial = [s for s in snapshots if s.strip() and "excluded" not in s]
        assert len(partial) >= 2, f"tokens did not stream: {snapshots}"  # several partial states were visible
        assert not page.locator(".answer-progress").last.is_visible()  # the text replaced the steps
        labels = page.evaluate("window.stepLabels")
        assert labels[0] == "Searching…" and labels[-2:] == ["1 source found", "Writing…"], labels
        page.wait_for_selector(".answer.status-done .cite-chip")
        done = page.locator(".answer.status-done").last
        assert done.locator("strong").first.inner_text() == "30 days"
        assert "Written by fake" in done.locator(".answer-meta").inner_text()
        sources = done.locator("details.sources")
        assert not sources.evaluate("el => el.open")  # collapsed: "1 source · 1 cited"
        assert "1 source" in sources.locator("summary").first.inner_text()
        source = done.locator("details.source").first
        assert not source.evaluate("el => el.open")
        done.locator(".cite-chip").first.click()
        assert sources.evaluate("el => el.open") and source.evaluate("el => el.open")
        assert "within 30 days of purchase" in source.inner_text()
        assert "refund-policy" in source.inner_text().lower() or "Refund" in source.inner_text()
        page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=False)
        fake_llm.configure(ttft_s=0)

        # A long answer can be stopped; what was written so far stays, marked as stopped.
        reply(" ".join(["This is a very long answer that goes on and on."] * 60))
        fake_llm.configure(token_rate=25)
        page.fill("#ask-input", "Tell me everything about refunds, in detail.")
        page.click("#send-button")
        page.wait_for_selector(".answer[aria-busy=true] .stop-button")
        text_snapshots(page, ".answer .answer-body", until="goes on and on")
        page.locator(".answer[aria-busy=true] .stop-button").click()
        page.wait_for_selector(".answer.status-stopped")
        stopped = page.locator(".answer.status-stopped").last
        assert "goes on" in stopped.inner_text()
        with tenant_scope(tenant):
            answer = Message.objects.filter(role="assistant").order_by("-pk").first()
            assert answer.status == Message.Status.STOPPED
            assert 0 < len(answer.content.split()) < 600

        # The same chat on a phone.
        phone = browser.new_page(viewport={"width": 390, "height": 780}, device_scale_factor=2)
        phone.context.add_cookies(page.context.cookies())
        conversation_url = page.url
        phone.goto(conversation_url)
        phone.wait_for_selector(".answer.status-done")
        phone.screenshot(path=str(SCREENSHOTS / "chat-phone.png"))
        phone.close()
        page.close()
    # Streaming answers (SSE, server-rendered HTML put into the page) keep to the Content-Security-Policy.
    assert [e for e in errors if "Content Security Policy" in e or "Refused to" in e] == []
