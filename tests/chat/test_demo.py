"""The demo tenant gets a working assistant whatever order the apps' receivers run in."""

import pytest

from accounts.signals import demo_tenant_ready
from accounts.tenancy import tenant_scope
from chat.models import AnswerMode, Assistant
from chat.retrieval import assistant_kb_ids
from knowledge.models import KnowledgeBase

pytestmark = pytest.mark.django_db


def test_demo_signal_creates_one_default_assistant_over_all_knowledge(tenant_a):
    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        demo_tenant_ready.send(sender=None, tenant=tenant, owner=tenant_a.owner)
        demo_tenant_ready.send(sender=None, tenant=tenant, owner=tenant_a.owner)  # seeding again: no duplicate
        assistants = list(Assistant.objects.filter(tenant=tenant))
        assert len(assistants) == 1 and assistants[0].is_default
        # A knowledge base created after the assistant (another receiver, or later) is searched too.
        kb = KnowledgeBase.objects.create(tenant=tenant, name="Sample", embedding_model="use-multilingual",
                                          embedding_dim=512)
        all_kbs = set(KnowledgeBase.objects.filter(tenant=tenant).values_list("pk", flat=True))
        assert kb.pk in all_kbs
        assert set(assistant_kb_ids(tenant=tenant, assistant=assistants[0])) == all_kbs


def test_linked_knowledge_bases_restrict_the_search(scope_a, assistant_a):
    tenant = scope_a.tenant
    one = KnowledgeBase.objects.create(tenant=tenant, name="One", embedding_model="m", embedding_dim=8)
    KnowledgeBase.objects.create(tenant=tenant, name="Two", embedding_model="m", embedding_dim=8)
    assistant_a.knowledge_bases.set([one])
    assert assistant_kb_ids(tenant=tenant, assistant=assistant_a) == [one.pk]


def test_demo_assistant_quotes_the_documents_when_no_real_model_is_configured(tenant_a):
    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        demo_tenant_ready.send(sender=None, tenant=tenant, owner=tenant_a.owner)
        assistant = Assistant.objects.get(tenant=tenant)
        assert assistant.answer_mode == AnswerMode.EXTRACTIVE
        # A demo seeded earlier with the old default is switched on the next refresh.
        Assistant.objects.filter(pk=assistant.pk).update(answer_mode=AnswerMode.GENERATIVE_FALLBACK)
        demo_tenant_ready.send(sender=None, tenant=tenant, owner=tenant_a.owner)
        assistant.refresh_from_db()
        assert assistant.answer_mode == AnswerMode.EXTRACTIVE
