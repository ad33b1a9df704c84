"""Sample data for the demo tenant: a default assistant over the tenant's knowledge bases."""

from django.dispatch import receiver

from accounts.signals import demo_tenant_ready


@receiver(demo_tenant_ready)
def create_demo_assistant(sender, tenant, owner, **kwargs):
    from accounts.tenancy import tenant_scope
    from chat.models import AnswerMode, Assistant
    from chat.services import assistant_ensure_default, default_answer_mode

    # No knowledge bases are linked: an assistant without links answers from all of the tenant's, so it
    # works whether the sample knowledge base was created before or after this receiver ran.
    assistant = assistant_ensure_default(tenant=tenant, created_by=owner)
    # A demo refreshed on a machine without a real model (again) quotes the documents instead of trying one.
    if (not assistant.answer_target and assistant.answer_mode == AnswerMode.GENERATIVE_FALLBACK
            and default_answer_mode() == AnswerMode.EXTRACTIVE):
        with tenant_scope(tenant):
            Assistant.objects.filter(pk=assistant.pk).update(answer_mode=AnswerMode.EXTRACTIVE)
