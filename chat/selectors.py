"""Reads for chat. Who sees what: a person sees their own conversations (in the browser and with their session on
the API); an API key acts for the whole tenant and sees all of the tenant's conversations."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.http import Http404
from django.utils.translation import gettext as _

from accounts.selectors import tenant_object_or_404
from billing.selectors import usage_for_messages
from chat import llm
from chat.models import Assistant, Conversation, Feedback, Message
from chat.pipeline import generation_params


def assistant_list(*, tenant) -> QuerySet:
    return Assistant.objects.filter(tenant=tenant).prefetch_related("knowledge_bases")


def assistant_get(*, tenant, assistant_id) -> Assistant:
    return tenant_object_or_404(Assistant, tenant=tenant, pk=assistant_id)


def assistant_by_model_name(*, tenant, model: str) -> Assistant | None:
    """OpenAI-style `model`: an assistant's name (case-insensitive), id, or "assistant-<id>"."""
    model = (model or "").strip()
    qs = Assistant.objects.filter(tenant=tenant)
    if not model:
        return None
    found = qs.filter(name__iexact=model).first()
    if found is None:
        raw = model.removeprefix("assistant-")
        if raw.isdigit():
            found = qs.filter(pk=int(raw)).first()
    return found


def assistant_parameter_notes(*, tenant, assistant: Assistant) -> list[str]:
    """Visible notes about parameters the chosen provider ignores (e.g. OpenAI has no top_k)."""
    target = assistant.answer_target or llm.default_answer_target()
    provider, ignored = llm.ignored_params(target, generation_params(assistant), tenant=tenant)
    return [_("%(provider)s ignores %(param)s; it has no such setting.") % {"provider": provider, "param": name}
            for name in ignored]


def _visible(qs: QuerySet, *, user=None, api_key=None) -> QuerySet:
    if user is not None and getattr(user, "pk", None):
        return qs.filter(user=user)
    if api_key is not None:
        return qs
    return qs.none()


def conversation_list(*, tenant, user=None, api_key=None, query: str = "") -> QuerySet:
    qs = _visible(Conversation.objects.filter(tenant=tenant), user=user, api_key=api_key)
    query = (query or "").strip()
    if "\x00" in query:
        return qs.none()  # stored text never holds a NUL (PostgreSQL refuses it, and would refuse the query)
    if query:
        in_messages = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=query)
        qs = qs.filter(Q(title__icontains=query) | Exists(in_messages))
    return qs.select_related("assistant").order_by("-updated_at", "-id")


def conversation_get(*, tenant, conversation_id, user=None, api_key=None) -> Conversation:
    """Another person's conversation is a 404, exactly like another tenant's."""
    conversation = tenant_object_or_404(Conversation, tenant=tenant, pk=conversation_id)
    if not _visible(Conversation.objects.filter(pk=conversation.pk), user=user, api_key=api_key).exists():
        raise Http404("No conversation matches the given query.")
    return conversation


def message_list(*, conversation: Conversation) -> QuerySet:
    return conversation.messages.select_related("feedback").order_by("created_at", "id")


def message_get(*, tenant, message_id, user=None, api_key=None) -> Message:
    message = tenant_object_or_404(Message, tenant=tenant, pk=message_id)
    conversation_get(tenant=tenant, conversation_id=message.conversation_id, user=user, api_key=api_key)
    return message


def answer_get(*, tenant, message_id, user=None, api_key=None) -> Message:
    message = message_get(tenant=tenant, message_id=message_id, user=user, api_key=api_key)
    if message.role != Message.Role.ASSISTANT:
        raise Http404("No answer matches the given query.")
    return message


def thread(*, conversation: Conversation) -> list[dict]:
    """The conversation as question -> answer versions (latest last), for the chat view."""
    questions = (
        conversation.messages.filter(role=Message.Role.USER)
        .prefetch_related(Prefetch("answers", queryset=Message.objects.select_related("feedback")
                                   .order_by("version", "id")))
        .order_by("created_at", "id")
    )
    return [{"question": q, "answers": list(q.answers.all())} for q in questions]


def feedback_for(*, message: Message) -> Feedback | None:
    try:
        return message.feedback
    except Feedback.DoesNotExist:
        return None


def attach_usage(*, tenant, answers: list[Message]) -> None:
    """Give each answer `ledger_usage` (tokens and cost by stage from the billing ledger), in one query."""
    usage = usage_for_messages(tenant=tenant, message_ids=[a.pk for a in answers])
    for answer in answers:
        answer.ledger_usage = usage.get(answer.pk)
