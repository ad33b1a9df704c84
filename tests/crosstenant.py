"""Builders for the cross-tenant route walk (tests/test_cross_tenant.py).

Every URL parameter that names an object (`<int:kb_id>`, `<str:token>`...) needs a builder here that
creates such an object for a tenant and returns the value to put in the URL. The walk fails on a route whose
parameter has no builder, so a new route can't slip past the check. Builders run inside the tenant's scope.
"""

from collections.abc import Callable
from types import SimpleNamespace

from accounts.models import Membership

BUILDERS: dict[str, Callable[[SimpleNamespace], object]] = {}


def builder(*names: str):
    def register(fn):
        for name in names:
            BUILDERS[name] = fn
        return fn

    return register


@builder("key_id")
def _api_key(team):
    from accounts.services import api_key_create

    key, _raw = api_key_create(tenant=team.tenant, name="victim key", scopes=["read"])
    return key.pk


@builder("membership_id")
def _membership(team):
    return Membership.objects.get(tenant=team.tenant, user=team.member).pk


@builder("invitation_id")
def _invitation(team):
    from accounts.services import invitation_create

    invitation, _raw = invitation_create(
        tenant=team.tenant, invited_by=team.owner, email="victim-invite@example.com", role="member"
    )
    return invitation.pk


@builder("kb_id")
def _knowledge_base(team):
    from tests.factories.knowledge import make_kb

    return make_kb(team.tenant, name="victim kb").pk


@builder("document_id")
def _document(team):
    from tests.factories.knowledge import make_document, make_kb

    kb = make_kb(team.tenant, name="victim kb for documents")
    return make_document(team.tenant, kb, name="victim.txt", data="victim document text").pk


# Parameters that are not object ids of a tenant (secrets that identify themselves, language codes...).
NOT_OBJECT_IDS = {"token", "uidb64"}  # uidb64: a password-reset link names a user, with its token


@builder("assistant_id")
def _assistant(team):
    from tests.factories.chat import AssistantFactory

    return AssistantFactory(tenant=team.tenant, name="victim assistant").pk


@builder("conversation_id")
def _conversation(team):
    from tests.factories.chat import ConversationFactory

    return ConversationFactory(tenant=team.tenant, user=team.owner).pk


@builder("message_id")
def _answer(team):
    from tests.factories.chat import AnswerFactory

    return AnswerFactory(tenant=team.tenant, conversation__user=team.owner).pk


@builder("provider_id")
def _llm_provider(team):
    from llm.services import tenant_provider_create

    return tenant_provider_create(tenant=team.tenant, name="victim-provider", base_url="https://api.openai.com/v1",
                                  api_key="sk-victim-secret-key", models=["gpt-4o-mini"]).pk


@builder("eval_question_id")
def _eval_question(team):
    from knowledge.search.evaluation.services import eval_question_create
    from tests.factories.search import make_indexed_document, make_search_kb

    kb = make_search_kb(team.tenant, name="victim search kb")
    doc = make_indexed_document(team.tenant, kb, ["victim passage"])
    return eval_question_create(tenant=team.tenant, kb=kb, text="victim question?", document_ids=[doc.pk]).pk


@builder("eval_run_id")
def _eval_run(team):
    from knowledge.search.evaluation.services import eval_question_create, eval_run_create
    from tests.factories.search import make_indexed_document, make_search_kb

    kb = make_search_kb(team.tenant, name="victim eval kb")
    doc = make_indexed_document(team.tenant, kb, ["victim passage about refunds"])
    eval_question_create(tenant=team.tenant, kb=kb, text="refunds?", document_ids=[doc.pk])
    return eval_run_create(tenant=team.tenant, kb=kb).pk
