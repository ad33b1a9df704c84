"""The browser chat: pages and htmx fragments (the streaming itself is covered by test_sse and the e2e test)."""

import pytest

from accounts.tenancy import tenant_scope
from chat import pipeline, services
from chat.models import Assistant, Conversation, Feedback, Message
from tests.conftest import web_client
from tests.factories.chat import ConversationFactory

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def answered(scope_a, assistant_a, docs, fake_llm, reply):
    docs.add("Refunds are possible within 30 days of purchase.", title="Refund policy", page=2)
    reply("Refunds take **30 days** [1]. <script>alert(1)</script>")
    question, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, user=scope_a.owner,
                                             content="What is the refund window?")
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    answer.refresh_from_db()
    return answer


def test_first_visit_creates_a_default_assistant(client_a, tenant_a):
    response = client_a.get("/chat/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="ask-input"' in body and 'for="ask-input"' in body  # labelled input
    with tenant_scope(tenant_a.tenant):
        assert Assistant.objects.filter(tenant=tenant_a.tenant, is_default=True).count() == 1


def test_conversation_page_renders_safe_markdown_citations_and_admin_usage(client_a, answered):
    body = client_a.get(f"/chat/c/{answered.conversation_id}/").content.decode()
    assert "<strong>30 days</strong>" in body
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body
    assert f'aria-controls="src-{answered.pk}-1"' in body and f'id="src-{answered.pk}-1"' in body
    assert "Refund policy" in body and "Refunds are possible within 30 days of purchase." in body
    assert "message-usage" in body and "tokens ·" in body  # admins see tokens and cost per answer


def test_members_do_not_see_usage(tenant_a, scope_a, assistant_a, docs, fake_llm):
    docs.add("Refunds are possible within 30 days of purchase.")
    _q, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, user=tenant_a.member,
                                       content="What is the refund window?")
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    member = web_client(tenant_a.member, tenant_a.tenant)
    body = member.get(f"/chat/c/{answer.conversation_id}/").content.decode()
    assert "w0 w1" in body and "message-usage" not in body


def test_htmx_navigation_returns_only_the_chat_pane(client_a, answered):
    response = client_a.get(f"/chat/c/{answered.conversation_id}/", HTTP_HX_TARGET="chat-main", **HTMX)
    body = response.content.decode()
    assert body.lstrip().startswith('<section class="chat-main"') and "<html" not in body


def test_ask_returns_the_question_and_a_streaming_answer(client_a, scope_a, assistant_a):
    response = client_a.post("/chat/ask", {"assistant_id": assistant_a.pk, "message": "Where is the office?"}, **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    answer = Message.objects.get(role="assistant")
    assert "Where is the office?" in body
    assert f'data-stream="/chat/messages/{answer.pk}/stream?render=1"' in body
    assert f'value="{answer.conversation_id}"' in body and 'hx-swap-oob="true"' in body
    assert response["HX-Push-Url"] == f"/chat/c/{answer.conversation_id}/"
    # The follow-up continues the same conversation.
    client_a.post("/chat/ask", {"assistant_id": assistant_a.pk, "message": "And its hours?",
                                "conversation_id": answer.conversation_id}, **HTMX)
    assert Conversation.objects.count() == 1 and Message.objects.count() == 4


def test_ask_validation_is_shown_not_lost(client_a, assistant_a):
    response = client_a.post("/chat/ask", {"assistant_id": assistant_a.pk, "message": "  "}, **HTMX)
    assert response.status_code == 200 and response["HX-Retarget"] == "#ask-error"
    assert "Ask a question." in response.content.decode()
    assert client_a.post("/chat/ask", {"assistant_id": 999999, "message": "hi"}, **HTMX).status_code == 404


def test_answer_fragment_stop_regenerate_feedback(client_a, answered):
    fragment = client_a.get(f"/chat/messages/{answered.pk}/").content.decode()
    assert 'class="answer status-done"' in fragment and "Regenerate" in fragment

    feedback = client_a.post(f"/chat/messages/{answered.pk}/feedback", {"rating": "-1", "comment": "Vague"}, **HTMX)
    assert feedback.status_code == 200 and 'aria-pressed="true"' in feedback.content.decode()
    assert Feedback.objects.get(message=answered).comment == "Vague"
    assert client_a.post(f"/chat/messages/{answered.pk}/feedback", {"rating": "x"}).status_code == 400

    regenerated = client_a.post(f"/chat/messages/{answered.pk}/regenerate", **HTMX).content.decode()
    new = Message.objects.get(parent_id=answered.parent_id, version=2)
    assert f'id="answer-{new.pk}"' in regenerated and "Earlier answers (1)" in regenerated
    assert client_a.post(f"/chat/messages/{new.pk}/stop", **HTMX).status_code == 204
    new.refresh_from_db()
    assert new.status == Message.Status.STOPPED


def test_conversation_list_search_rename_delete(client_a, tenant_a, scope_a, assistant_a):
    mine = ConversationFactory(tenant=tenant_a.tenant, user=tenant_a.owner, title="Refund questions",
                               assistant=assistant_a)
    ConversationFactory(tenant=tenant_a.tenant, user=tenant_a.owner, title="Office hours", assistant=assistant_a)
    ConversationFactory(tenant=tenant_a.tenant, user=tenant_a.member, title="Refund secrets", assistant=assistant_a)
    listed = client_a.get("/chat/conversations/?q=refund", **HTMX).content.decode()
    assert "Refund questions" in listed and "Office hours" not in listed and "Refund secrets" not in listed

    renamed = client_a.post(f"/chat/c/{mine.pk}/rename", {"title": "Refunds 2025"}, **HTMX)
    assert renamed.status_code == 200 and "Refunds 2025" in renamed.content.decode()
    assert client_a.post(f"/chat/c/{mine.pk}/rename", {"title": " "}, **HTMX).status_code == 400

    deleted = client_a.post(f"/chat/c/{mine.pk}/delete", {"current": str(mine.pk)}, **HTMX)
    assert deleted["HX-Redirect"] == "/chat/"
    assert not Conversation.objects.filter(pk=mine.pk).exists()


def test_assistant_admin_pages(client_a, tenant_a, scope_a, docs, openai_pool):
    member = web_client(tenant_a.member, tenant_a.tenant)
    assert member.get("/chat/assistants/new").status_code == 403
    assert member.get("/chat/assistants/").status_code == 200

    form = client_a.get("/chat/assistants/new").content.decode()
    assert "ROLE" in form and "OUTPUT FORMAT" in form  # the default prompt is prefilled
    bad = client_a.post("/chat/assistants/new", {"name": "Bot", "temperature": "5", "top_p": "0.85",
                                                 "max_tokens": "100", "presence_penalty": "0",
                                                 "frequency_penalty": "0", "context_window": "8192",
                                                 "few_shot": "[not json", "system_prompt": "x"})
    assert bad.status_code == 200 and "errorlist" in bad.content.decode()
    good = client_a.post("/chat/assistants/new", {
        "name": "Bot", "temperature": "0.2", "top_p": "0.9", "top_k": "10", "max_tokens": "300",
        "presence_penalty": "0", "frequency_penalty": "0", "context_window": "8192", "system_prompt": "ROLE x",
        "knowledge_bases": [docs.kb.pk], "few_shot": '[{"user": "a", "assistant": "b"}]',
        "retrieval": '{"k": 5}', "answer_target": "openai/gpt-4o-mini"})
    assert good.status_code == 302
    bot = Assistant.objects.get(name="Bot")
    assert list(bot.knowledge_bases.all()) == [docs.kb] and bot.retrieval == {"k": 5} and bot.top_k == 10
    listing = client_a.get("/chat/assistants/").content.decode()
    assert "ignores top_k" in listing
    edit = client_a.post(f"/chat/assistants/{bot.pk}/edit", {
        "name": "Bot 2", "temperature": "0.3", "top_p": "0.85", "max_tokens": "300", "presence_penalty": "0",
        "frequency_penalty": "0", "context_window": "8192", "system_prompt": "ROLE y"})
    assert edit.status_code == 302
    bot.refresh_from_db()
    assert bot.name == "Bot 2" and bot.top_k is None and list(bot.knowledge_bases.all()) == []
    assert client_a.post(f"/chat/assistants/{bot.pk}/delete").status_code == 302
    assert not Assistant.objects.filter(pk=bot.pk).exists()


def test_chat_page_in_korean(client_a):
    client_a.post("/i18n/setlang/", {"language": "ko", "next": "/chat/"})
    body = client_a.get("/chat/").content.decode()
    assert 'lang="ko"' in body
