"""Writes for chat: assistants, conversations, questions, answers (regenerate / stop) and feedback."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from chat import defaults, llm, streams
from chat.models import AnswerMode, Assistant, Conversation, Feedback, Message
from chat.payloads import message_payload
from chat.tasks import generate_answer
from knowledge.models import KnowledgeBase
from knowledge.search.config import SettingsError, clean_settings

MAX_QUESTION_CHARS = 8000
ASSISTANT_FIELDS = (
    "name", "description", "answer_mode", "answer_target", "cheap_target", "system_prompt", "few_shot", "temperature", "top_p",
    "top_k", "max_tokens", "presence_penalty", "frequency_penalty", "context_window", "retrieval", "json_schema",
    "is_default",
)


# ------------------------------------------------------------------ assistants

def validate_few_shot(value) -> list[dict[str, str]]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(
        isinstance(p, dict) and isinstance(p.get("user"), str) and isinstance(p.get("assistant"), str)
        and p["user"].strip() and p["assistant"].strip()
        for p in value
    ):
        raise ValidationError({"few_shot": _('Examples must be a list of {"user": "...", "assistant": "..."} pairs.')})
    if len(value) > 20:
        raise ValidationError({"few_shot": _("At most 20 examples.")})
    return [{"user": p["user"].strip(), "assistant": p["assistant"].strip()} for p in value]


def validate_retrieval(value) -> dict:
    """Search settings (checked by the search app) plus chat's own `min_dense_score`."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ValidationError({"retrieval": _("Retrieval settings must be an object.")})
    value = dict(value)
    cleaned = {}
    if "min_dense_score" in value:
        raw = value.pop("min_dense_score")
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not -1 <= raw <= 1:
            raise ValidationError({"retrieval": _("min_dense_score must be a number between -1 and 1.")})
        cleaned["min_dense_score"] = float(raw)
    try:
        cleaned.update(clean_settings(value, partial=True))
    except SettingsError as exc:
        raise ValidationError({"retrieval": "; ".join(f"{k}: {v}" for k, v in exc.fields.items())}) from exc
    return cleaned


def validate_json_schema(value):
    if value in (None, "", {}):
        return None
    if not isinstance(value, dict) or "type" not in value and "properties" not in value:
        raise ValidationError({"json_schema": _("The JSON schema must be an object with a type or properties.")})
    return value


def _check_kbs(tenant: Tenant, kb_ids) -> list[KnowledgeBase]:
    kb_ids = list(kb_ids or [])
    kbs = list(KnowledgeBase.objects.filter(tenant=tenant, pk__in=kb_ids))
    if len(kbs) != len(set(kb_ids)):
        raise ValidationError({"knowledge_bases": _("Unknown knowledge base.")})
    return kbs


def _apply(assistant: Assistant, data: dict) -> None:
    for name in ASSISTANT_FIELDS:
        if name in data:
            setattr(assistant, name, data[name])
    assistant.few_shot = validate_few_shot(assistant.few_shot)
    assistant.retrieval = validate_retrieval(assistant.retrieval)
    assistant.json_schema = validate_json_schema(assistant.json_schema)
    if not (assistant.system_prompt or "").strip():
        assistant.system_prompt = defaults.DEFAULT_SYSTEM_PROMPT
    assistant.full_clean(exclude=["tenant", "created_by"], validate_unique=False)


def _save_unique(assistant: Assistant) -> None:
    try:
        with transaction.atomic():
            assistant.save()
    except IntegrityError as exc:
        raise ValidationError({"name": _("An assistant with this name already exists.")}) from exc


def default_answer_mode(*, answer_target: str = "") -> str:
    """Quote the documents unless the assistant names a model or the platform has a real answer model;
    then write, and quote when the model is down."""
    return AnswerMode.GENERATIVE_FALLBACK if answer_target or llm.has_answer_model() else AnswerMode.EXTRACTIVE


def assistant_create(*, tenant: Tenant, created_by=None, knowledge_bases=None, **data) -> Assistant:
    with tenant_scope(tenant), transaction.atomic():
        assistant = Assistant(tenant=tenant, created_by=created_by, answer_mode=default_answer_mode(answer_target=data.get("answer_target") or ""))
        _apply(assistant, data)
        kbs = _check_kbs(tenant, knowledge_bases)
        _save_unique(assistant)
        assistant.knowledge_bases.set(kbs)
        if assistant.is_default or not Assistant.objects.filter(tenant=tenant, is_default=True).exists():
            _make_default(tenant, assistant)
    return assistant


def assistant_update(*, tenant: Tenant, assistant: Assistant, knowledge_bases=None, **data) -> Assistant:
    with tenant_scope(tenant), transaction.atomic():
        _apply(assistant, data)
        _save_unique(assistant)
        if knowledge_bases is not None:
            assistant.knowledge_bases.set(_check_kbs(tenant, knowledge_bases))
        if assistant.is_default:
            _make_default(tenant, assistant)
    return assistant


def _make_default(tenant: Tenant, assistant: Assistant) -> None:
    Assistant.objects.filter(tenant=tenant, is_default=True).exclude(pk=assistant.pk).update(is_default=False)
    if not assistant.is_default:
        Assistant.objects.filter(pk=assistant.pk).update(is_default=True)
        assistant.is_default = True


def assistant_delete(*, tenant: Tenant, assistant: Assistant) -> None:
    with tenant_scope(tenant), transaction.atomic():
        was_default = assistant.is_default
        assistant.delete()
        if was_default:
            successor = Assistant.objects.filter(tenant=tenant).order_by("name").first()
            if successor is not None:
                _make_default(tenant, successor)


def assistant_ensure_default(*, tenant: Tenant, created_by=None) -> Assistant:
    """The tenant's default assistant, created over all of its knowledge bases when it has none."""
    with tenant_scope(tenant):
        existing = Assistant.objects.filter(tenant=tenant).order_by("-is_default", "name").first()
        if existing is not None:
            return existing
        return assistant_create(tenant=tenant, created_by=created_by, name=_("Docs assistant"),
                                description=_("Answers from every knowledge base of this team."), is_default=True)


# ------------------------------------------------------------------ conversations

def _title_from(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:60].rsplit(" ", 1)[0] + "…"


def conversation_create(*, tenant: Tenant, assistant: Assistant, user=None, api_key=None, title: str = "",
                        source: str = Conversation.Source.WEB) -> Conversation:
    with tenant_scope(tenant):
        return Conversation.objects.create(tenant=tenant, assistant=assistant, user=user, api_key=api_key,
                                           title=title[:200], source=source)


def conversation_rename(*, tenant: Tenant, conversation: Conversation, title: str) -> Conversation:
    title = " ".join((title or "").split())
    if not title:
        raise ValidationError({"title": _("A title can't be empty.")})
    if len(title) > 200:
        raise ValidationError({"title": _("At most 200 characters.")})
    with tenant_scope(tenant):
        conversation.title = title
        conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, tenant: Tenant, conversation: Conversation) -> None:
    with tenant_scope(tenant):
        ids = list(conversation.messages.filter(role=Message.Role.ASSISTANT).exclude(
            status__in=Message.FINAL).values_list("pk", flat=True))
        for message_id in ids:  # stop whatever is still being generated for it
            streams.request_cancel(message_id)
        conversation.delete()


# ------------------------------------------------------------------ questions and answers

def _enqueue(message: Message) -> None:
    tenant_id, message_id = message.tenant_id, message.pk
    streams.delete(message_id)  # a new answer has no events yet: drop leftovers of a reused id (e.g. a restore)
    # Readers see the answer queued and searching at once, before any worker has it; the worker's events follow.
    streams.publish(message_id, "meta", {"message_id": message_id, "conversation_id": message.conversation_id,
                                         "version": message.version, "status": "queued"})
    streams.publish(message_id, "step", {"step": "searching"})
    transaction.on_commit(lambda: generate_answer.delay(message_id=message_id, tenant_id=tenant_id))


def question_ask(*, tenant: Tenant, assistant: Assistant, content: str, conversation: Conversation | None = None,
                 user=None, api_key=None, source: str = Conversation.Source.WEB,
                 overrides: dict | None = None) -> tuple[Message, Message]:
    """Save the question and a queued answer, and hand the answer to a chat worker once committed."""
    content = (content or "").strip()
    if not content:
        raise ValidationError({"message": _("Ask a question.")})
    if len(content) > MAX_QUESTION_CHARS:
        raise ValidationError({"message": _("A question can have at most %(n)s characters.") % {"n": MAX_QUESTION_CHARS}})
    with tenant_scope(tenant), transaction.atomic():
        if conversation is None:
            conversation = conversation_create(tenant=tenant, assistant=assistant, user=user, api_key=api_key,
                                               title=_title_from(content), source=source)
        else:
            if conversation.assistant_id != assistant.pk:
                conversation.assistant = assistant
            if not conversation.title:
                conversation.title = _title_from(content)
            conversation.save(update_fields=["assistant", "title", "updated_at"])
        question = Message.objects.create(tenant=tenant, conversation=conversation, role=Message.Role.USER,
                                          content=content, status=Message.Status.DONE, user=user, api_key=api_key)
        answer = Message.objects.create(tenant=tenant, conversation=conversation, role=Message.Role.ASSISTANT,
                                        parent=question, status=Message.Status.QUEUED, user=user, api_key=api_key,
                                        overrides=overrides or {})
        _enqueue(answer)
    return question, answer


def openai_ask(*, tenant: Tenant, assistant: Assistant, turns: list[tuple[str, str]], question: str, user=None,
               api_key=None, overrides: dict | None = None) -> Message:
    """An OpenAI-style call: a stateless client sends the whole conversation each time, so each call starts a
    conversation holding the earlier (question, answer) turns it sent (they condense the follow-up), then asks
    the last question. One transaction: a refused question leaves nothing behind."""
    with tenant_scope(tenant), transaction.atomic():
        conversation = conversation_create(tenant=tenant, assistant=assistant, user=user, api_key=api_key,
                                           title=question[:60], source=Conversation.Source.OPENAI)
        for question_text, answer_text in turns:
            earlier = Message.objects.create(tenant=tenant, conversation=conversation, role=Message.Role.USER,
                                             content=question_text, user=user, api_key=api_key)
            Message.objects.create(tenant=tenant, conversation=conversation, role=Message.Role.ASSISTANT,
                                   parent=earlier, content=answer_text, user=user, api_key=api_key,
                                   status=Message.Status.DONE)
        _question, answer = question_ask(tenant=tenant, assistant=assistant, conversation=conversation,
                                         content=question, user=user, api_key=api_key,
                                         source=Conversation.Source.OPENAI, overrides=overrides)
    return answer


def answer_regenerate(*, tenant: Tenant, answer: Message, user=None, api_key=None) -> Message:
    """A new version of an answer to the same question; the older versions stay."""
    if answer.role != Message.Role.ASSISTANT or answer.parent_id is None:
        raise ValidationError({"message": _("Only answers can be regenerated.")})
    with tenant_scope(tenant), transaction.atomic():
        # Lock the question so two clicks don't both become version n+1.
        Message.objects.select_for_update().get(pk=answer.parent_id)
        running = list(Message.objects.filter(parent_id=answer.parent_id).exclude(status__in=Message.FINAL)
                       .values_list("pk", flat=True))
        for message_id in running:
            answer_stop(tenant=tenant, answer_id=message_id)
        latest = Message.objects.filter(parent_id=answer.parent_id).aggregate(v=Max("version"))["v"] or 0
        new = Message.objects.create(tenant=tenant, conversation_id=answer.conversation_id,
                                     role=Message.Role.ASSISTANT, parent_id=answer.parent_id, version=latest + 1,
                                     status=Message.Status.QUEUED, user=user, api_key=api_key)
        Conversation.objects.filter(pk=answer.conversation_id).update(updated_at=timezone.now())
        _enqueue(new)
    return new


def answer_stop(*, tenant: Tenant, answer_id: int) -> None:
    """Ask the worker to stop; an answer no worker has started yet is stopped right here."""
    streams.request_cancel(answer_id)
    with tenant_scope(tenant):
        stopped_here = Message.objects.filter(pk=answer_id, status=Message.Status.QUEUED).update(
            status=Message.Status.STOPPED, finished_at=timezone.now())
        if stopped_here:
            message = Message.objects.get(pk=answer_id)
            streams.publish(answer_id, "done", {"status": Message.Status.STOPPED, "message": message_payload(message)})


# ------------------------------------------------------------------ feedback

def feedback_set(*, tenant: Tenant, answer: Message, rating: int, comment: str = "", user=None,
                 api_key=None) -> Feedback:
    if answer.role != Message.Role.ASSISTANT:
        raise ValidationError({"message": _("Feedback is given on answers.")})
    if rating not in (1, -1):
        raise ValidationError({"rating": _("Rating must be 1 (helpful) or -1 (not helpful).")})
    comment = (comment or "").strip()
    if len(comment) > 2000:
        raise ValidationError({"comment": _("At most 2000 characters.")})
    with tenant_scope(tenant):
        feedback, _created = Feedback.objects.update_or_create(
            message=answer, defaults={"tenant": tenant, "rating": rating, "comment": comment, "user": user,
                                      "api_key": api_key},
        )
    return feedback
