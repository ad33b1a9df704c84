"""A usage limit reached by the search's own model calls ends the answer as a quota refusal: 429 with Retry-After
over the API and the quota message in the browser, never "model unavailable" or a keywords-only answer.

The assistant quotes the documents (no model writes the answer) and its knowledge base embeds through the
gateway, so the query's embedding is the only paid call: it used to fail soft as "embedding model unavailable".
"""

import pytest

from billing.models import Plan
from billing.services import subscription_set
from chat import pipeline, services
from chat.models import AnswerMode, Assistant, Message
from tests.factories.billing import PlanFactory, record_usage
from tests.factories.search import make_indexed_document, make_search_kb

QUESTION = "What is the refund window?"


@pytest.fixture
def over_quota(scope_a, assistant_a, fake_llm):
    tenant = scope_a.tenant
    kb = make_search_kb(tenant, model=f"gateway:{fake_llm.target.split('/')[0]}/fake-embed@512", dim=512)
    make_indexed_document(tenant, kb, ["Refunds are possible within 30 days of purchase."])
    Assistant.objects.filter(pk=assistant_a.pk).update(answer_mode=AnswerMode.EXTRACTIVE)
    subscription_set(tenant=tenant, plan=PlanFactory(monthly_token_allowance=1000,
                                                     enforcement=Plan.Enforcement.HARD))
    record_usage(tenant, input_tokens=1000, output_tokens=0)
    return assistant_a


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
def test_chat_api_answers_a_quota_refusal_during_search_with_429(api_a, eager_celery, over_quota, fake_llm):
    for stream in (False, True):
        response = api_a.post(f"/api/v1/assistants/{over_quota.pk}/chat", {"message": QUESTION, "stream": stream},
                              format="json")
        assert response.status_code == 429, response.content
        assert int(response["Retry-After"]) > 0
        assert response.json()["error"]["code"] == "quota_exceeded"  # a stream refused before any text too
    assert fake_llm.stats()["requests"] == 0


@pytest.mark.django_db
def test_browser_shows_the_quota_message_not_model_unavailable(client_a, scope_a, over_quota):
    _question, answer = services.question_ask(tenant=scope_a.tenant, assistant=over_quota, user=scope_a.owner,
                                              content=QUESTION)
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    answer.refresh_from_db()
    assert answer.status == Message.Status.FAILED and answer.error_code == "quota_exceeded"
    body = client_a.get(f"/chat/messages/{answer.pk}/").content.decode()
    assert answer.error in body and "1,000 tokens" in body
    assert "unavailable" not in body and "keywords only" not in body
