"""Issue 11, done when: the demo tenant as `make run` seeds it, with no generative model, answers the sample
knowledge base's questions in Korean and English in the browser with quoted passages, citations and the
sources it was given. Saves chat/screenshots/chat-extractive-en.png and chat-extractive-ko.png."""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command

from accounts.tenancy import system_scope, tenant_scope
from tests.chat.live import live_stack
from tests.e2e.test_chat_browser import SCREENSHOTS, record_step_labels

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]

EMAIL, PASSWORD = "demo@ragdesk.local", "ragdesk-demo"  # seed_demo's defaults (DEMO_EMAIL / DEMO_PASSWORD)

# (question, passages of the sample documents any one of which answers it, UI language)
ENGLISH = ("Which file formats are supported?",
           ["plain text (.txt), Markdown (.md), PDF with a text layer, CSV, Word (.docx) and HTML"], "en")
KOREAN = ("문서가 오래 대기 중으로 남아 있으면 어떻게 해야 하나요?",
          ["작업자(Celery 워커)가 실행 중인지 확인하세요"], "ko")


def wait_for_sample_kb(timeout: float = 600) -> list[tuple[str, str]]:
    from knowledge.models import Document

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with system_scope():
            states = list(Document.all_tenants.values_list("filename", "status"))
        if states and all(status in ("ready", "failed") for _name, status in states):
            return states
        time.sleep(0.5)
    raise AssertionError(f"the sample documents were not indexed in time: {states}")


def ask(page, question: str) -> None:
    before = page.locator(".answer.status-done").count()
    page.fill("#ask-input", question)
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelectorAll('.answer.status-done').length > {before}", timeout=120_000)


def check_quoted_answer(page, passages: list[str], *, quoted_label: str, sources_word: str) -> None:
    answer = page.locator(".answer.status-done").last
    body = answer.locator(".answer-body").inner_text()
    assert any(p in body for p in passages), f"no expected passage quoted: {body!r}"
    assert answer.locator(".answer-body blockquote").count() >= 1  # quoted verbatim, as a quote
    assert answer.locator(".cite-chip").count() >= 1, body
    assert quoted_label in answer.locator(".answer-meta").inner_text()
    summary = answer.locator("details.sources > summary").inner_text()
    assert sources_word in summary, summary
    sources = answer.locator("details.sources")
    assert not sources.evaluate("el => el.open")
    # The chip next to the quote opens its source, which holds the quoted passage.
    chip = answer.locator(".cite-chip").first
    source = page.locator(f"#{chip.get_attribute('aria-controls')}")
    chip.click()
    assert sources.evaluate("el => el.open") and source.evaluate("el => el.open")
    assert answer.locator("details.source.cited").count() >= 1
    assert answer.locator("details.source").first.evaluate("el => el.classList.contains('cited')")  # cited first


def test_demo_tenant_answers_the_sample_kb_by_quoting_in_english_and_korean(browser):
    from chat.models import AnswerMode, Assistant, Message

    with live_stack(queues=("chat", "ingest", "default")) as url:
        call_command("seed_demo")  # what `make run` does: demo tenant, sample KB (queued), Docs assistant
        states = wait_for_sample_kb()
        assert all(status == "ready" for _name, status in states), states
        with system_scope():
            assistant = Assistant.all_tenants.get(tenant__slug="demo")
        assert assistant.answer_mode == AnswerMode.EXTRACTIVE  # no generative model is configured here

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/accounts/login/")
        page.fill("input[name=username]", EMAIL)
        page.fill("input[name=password]", PASSWORD)
        page.click("form button[type=submit], form button")
        page.wait_for_url(f"{url}/")

        page.goto(f"{url}/chat/")
        assert "no model" in page.locator(".model-label").inner_text()
        record_step_labels(page)
        question, passages, _lang = ENGLISH
        ask(page, question)
        check_quoted_answer(page, passages, quoted_label="Quoted from documents", sources_word="sources")
        labels = page.evaluate("window.stepLabels")
        assert labels[0] == "Searching…" and "Quoting the documents…" in labels, labels
        page.screenshot(path=str(SCREENSHOTS / "chat-extractive-en.png"), full_page=False)

        # The same conversation with the interface in Korean, asked in Korean.
        page.select_option("#lang", "ko")
        page.wait_for_load_state()
        page.wait_for_function("() => document.documentElement.lang === 'ko'")
        record_step_labels(page)
        question, passages, _lang = KOREAN
        ask(page, question)
        check_quoted_answer(page, passages, quoted_label="문서에서 인용", sources_word="출처")
        labels = page.evaluate("window.stepLabels")
        assert labels[0] == "검색 중…" and "문서에서 인용하는 중…" in labels, labels
        page.screenshot(path=str(SCREENSHOTS / "chat-extractive-ko.png"), full_page=False)
        assert not errors, errors

        with system_scope():
            tenant = assistant.tenant
        with tenant_scope(tenant):
            answers = list(Message.objects.filter(role="assistant").order_by("pk"))
        assert [a.answered_by for a in answers] == ["extractive", "extractive"]
        assert all(a.citations and len(a.sources) >= len(a.citations) for a in answers)
        page.close()
