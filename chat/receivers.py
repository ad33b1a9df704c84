"""Chat's hooks into other apps: the demo tenant's default assistant, and the names of chat's ids on the usage
pages (billing can't import chat)."""

from django.dispatch import receiver

from accounts.signals import demo_tenant_ready
from accounts.tenancy import tenant_scope
from chat.models import AnswerMode, Assistant, Conversation
from chat.services import assistant_ensure_default, default_answer_mode


@receiver(demo_tenant_ready)
def create_demo_assistant(sender, tenant, owner, **kwargs):
    # No knowledge bases are linked: an assistant without links answers from all of the tenant's, so it
    # works whether the sample knowledge base was created before or after this receiver ran.
    assistant = assistant_ensure_default(tenant=tenant, created_by=owner)
    # A demo refreshed on a machine without a real model (again) quotes the documents instead of trying one.
    if (not assistant.answer_target and assistant.answer_mode == AnswerMode.GENERATIVE_FALLBACK
            and default_answer_mode() == AnswerMode.EXTRACTIVE):
        with tenant_scope(tenant):
            Assistant.objects.filter(pk=assistant.pk).update(answer_mode=AnswerMode.EXTRACTIVE)


def assistant_names(tenant, ids) -> dict[int, str]:
    return dict(Assistant.objects.filter(tenant=tenant, pk__in=ids).values_list("pk", "name"))


def conversation_titles(tenant, ids) -> dict[int, str]:
    rows = Conversation.objects.filter(tenant=tenant, pk__in=ids).values_list("pk", "title")
    return {pk: title for pk, title in rows if title}
