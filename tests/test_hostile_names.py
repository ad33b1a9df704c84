"""Names and contents that users type are shown escaped on every page (the drill found 0 XSS; keep it that way).

Every user-controlled field the pages display gets a payload that would run if it reached the HTML unescaped.
"""

import pytest
from django.urls import reverse

from accounts.models import ApiKey
from accounts.tenancy import tenant_scope
from knowledge.models import Document
from tests.factories.chat import AnswerFactory, AssistantFactory, ConversationFactory
from tests.factories.knowledge import make_document, make_kb

PAYLOADS = ('<script>alert("x")</script>', '<img src=x onerror=alert(1)>', '"><svg onload=alert(1)>')
HOSTILE = " ".join(PAYLOADS)


def _assert_escaped(body: str, page: str) -> None:
    for payload in PAYLOADS:
        assert payload not in body, f"{page} shows {payload!r} unescaped"


@pytest.fixture
def hostile(tenant_a):
    tenant = tenant_a.tenant
    tenant.name = ("Team " + HOSTILE)[:120]
    tenant.save(update_fields=["name"])
    tenant_a.owner.name = ("Owner " + HOSTILE)[:120]
    tenant_a.owner.save(update_fields=["name"])
    with tenant_scope(tenant):
        kb = make_kb(tenant, name=("KB " + HOSTILE)[:100], description=HOSTILE)
        document = make_document(tenant, kb, name="evil<script>alert(1)</script>.txt")
        Document.objects.filter(pk=document.pk).update(title=HOSTILE, status=Document.Status.FAILED,
                                                       error="Could not parse " + HOSTILE)
        assistant = AssistantFactory(tenant=tenant, name=("Bot " + HOSTILE)[:100], description=HOSTILE[:300])
        conversation = ConversationFactory(tenant=tenant, assistant=assistant, title=HOSTILE, user=tenant_a.owner)
        answer = AnswerFactory(tenant=tenant, conversation=conversation, content="Answer " + HOSTILE,
                               parent__content="Question " + HOSTILE)
        ApiKey.objects.filter(tenant=tenant).update(name=("Key " + HOSTILE)[:100])
    return {"kb": kb, "document": document, "assistant": assistant, "conversation": conversation, "answer": answer}


def test_pages_show_hostile_names_escaped(client_a, hostile):
    pages = [
        reverse("home"),
        reverse("knowledge:kb-list"),
        reverse("knowledge:kb-detail", args=[hostile["kb"].pk]),
        reverse("knowledge:kb-documents", args=[hostile["kb"].pk]),
        reverse("knowledge:document-detail", args=[hostile["document"].pk]),
        reverse("chat:home"),
        reverse("chat:conversations"),
        reverse("chat:conversation", args=[hostile["conversation"].pk]),
        reverse("chat:assistants"),
        reverse("chat:answer", args=[hostile["answer"].pk]),
        reverse("accounts:settings"),
        reverse("accounts:members"),
        reverse("accounts:api-keys"),
        reverse("billing:usage"),
    ]
    for page in pages:
        response = client_a.get(page, follow=True)
        assert response.status_code == 200, page
        body = response.content.decode()
        _assert_escaped(body, page)
    # The payload did reach the pages (escaped): the test is looking at the right fields.
    body = client_a.get(reverse("knowledge:document-detail", args=[hostile["document"].pk])).content.decode()
    assert "&lt;script&gt;" in body


def test_api_returns_hostile_names_as_data_not_html(api_a, hostile):
    response = api_a.get(f"/api/v1/knowledge-bases/{hostile['kb'].pk}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["name"].startswith("KB <script>")
