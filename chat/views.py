"""Browser chat (django-htmx): one page whose parts are swapped in place, answers streamed over SSE."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, push_url, trigger_client_event

from accounts.decorators import tenant_admin_required, tenant_required
from chat import defaults, llm, selectors, services
from chat.forms import AssistantForm
from chat.models import AnswerMode, Conversation, Message
from chat.sse import sse_relay


def _errors(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _thread_context(request, conversation: Conversation | None) -> dict:
    assistants = list(selectors.assistant_list(tenant=request.tenant))
    if not assistants:  # every team can chat right away: its first visit creates the default assistant
        assistants = [services.assistant_ensure_default(tenant=request.tenant, created_by=request.user)]
    current = conversation.assistant if conversation and conversation.assistant else None
    if current is None:
        wanted = request.GET.get("assistant")
        current = next((a for a in assistants if str(a.pk) == wanted), None) or (assistants[0] if assistants else None)
    target = (current.answer_target if current else "") or llm.default_answer_target()
    quoting = current is not None and current.answer_mode == AnswerMode.EXTRACTIVE
    thread = selectors.thread(conversation=conversation) if conversation else []
    if request.membership.is_admin:
        selectors.attach_usage(tenant=request.tenant, answers=[a for item in thread for a in item["answers"]])
    if quoting:  # no model answers: say so instead of naming one
        model_label, model_note = _("Answers quote the documents (no model)"), ""
    else:
        model_label = llm.target_label(target, tenant=request.tenant) if target else ""
        model_note = llm.target_note(target) if target else ""
    return {
        "model_label": model_label,
        "model_note": model_note,
        "conversation": conversation,
        "thread": thread,
        "assistants": assistants,
        "current_assistant": current,
        "conversations": selectors.conversation_list(tenant=request.tenant, user=request.user)[:100],
        "is_admin": request.membership.is_admin,
    }


def _chat_page(request, conversation: Conversation | None):
    context = _thread_context(request, conversation)
    if request.htmx and request.htmx.target == "chat-main":
        return render(request, "chat/_main.html", context)
    return render(request, "chat/chat.html", context)


@tenant_required
@require_GET
def chat_home(request):
    return _chat_page(request, None)


@tenant_required
@require_GET
def conversation_detail(request, conversation_id):
    conversation = selectors.conversation_get(tenant=request.tenant, conversation_id=conversation_id,
                                              user=request.user)
    return _chat_page(request, conversation)


@tenant_required
@require_GET
def conversation_list(request):
    conversations = selectors.conversation_list(tenant=request.tenant, user=request.user,
                                                query=request.GET.get("q", ""))[:100]
    active = request.GET.get("active")
    return render(request, "chat/_conversation_list.html",
                  {"conversations": conversations, "active_id": int(active) if (active or "").isdigit() else None,
                   "query": request.GET.get("q", "")})


@tenant_required
@require_POST
def conversation_rename(request, conversation_id):
    conversation = selectors.conversation_get(tenant=request.tenant, conversation_id=conversation_id,
                                              user=request.user)
    try:
        services.conversation_rename(tenant=request.tenant, conversation=conversation,
                                     title=request.POST.get("title", ""))
    except ValidationError as exc:
        response = HttpResponse(_errors(exc), status=400)
        return trigger_client_event(response, "chat:error", {"message": _errors(exc)})
    return render(request, "chat/_conversation_item.html", {"c": conversation, "active_id": conversation.pk})


@tenant_required
@require_POST
def conversation_delete(request, conversation_id):
    conversation = selectors.conversation_get(tenant=request.tenant, conversation_id=conversation_id,
                                              user=request.user)
    services.conversation_delete(tenant=request.tenant, conversation=conversation)
    if request.htmx:
        if request.POST.get("current") == str(conversation_id):
            return HttpResponseClientRedirect(reverse("chat:home"))
        return HttpResponse("")
    return redirect("chat:home")


@tenant_required
@require_POST
def ask(request):
    """Save the question and its queued answer; reply with both bubbles (the answer then streams itself)."""
    assistant = selectors.assistant_get(tenant=request.tenant, assistant_id=request.POST.get("assistant_id"))
    conversation = None
    if request.POST.get("conversation_id"):
        conversation = selectors.conversation_get(tenant=request.tenant, user=request.user,
                                                  conversation_id=request.POST["conversation_id"])
    try:
        question, answer = services.question_ask(
            tenant=request.tenant, assistant=assistant, conversation=conversation,
            content=request.POST.get("message", ""), user=request.user)
    except ValidationError as exc:
        response = render(request, "chat/_ask_error.html", {"error": _errors(exc)})
        response["HX-Retarget"] = "#ask-error"
        response["HX-Reswap"] = "innerHTML"
        return response
    context = {"item": {"question": question, "answers": [answer]}, "is_admin": request.membership.is_admin,
               "new_conversation": conversation is None, "conversation": question.conversation,
               "conversations": selectors.conversation_list(tenant=request.tenant, user=request.user)[:100]}
    response = render(request, "chat/_ask_result.html", context)
    if conversation is None:
        response = push_url(response, reverse("chat:conversation", args=[question.conversation_id]))
    return response


def _answer_context(request, answer: Message) -> dict:
    return {"answer": answer, "is_admin": request.membership.is_admin}


@tenant_required
@require_GET
def answer_detail(request, message_id):
    answer = selectors.answer_get(tenant=request.tenant, message_id=message_id, user=request.user)
    return render(request, "chat/_answer.html", _answer_context(request, answer))


@tenant_required
@require_GET
def answer_stream(request, message_id):
    """SSE relay of one answer; the browser's EventSource resumes with Last-Event-ID after a drop."""
    answer = selectors.answer_get(tenant=request.tenant, message_id=message_id, user=request.user)
    after = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    response = StreamingHttpResponse(
        sse_relay(tenant=request.tenant, message_id=answer.pk, after=after, render=request.GET.get("render") == "1",
                  language=translation.get_language()),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@tenant_required
@require_POST
def answer_stop(request, message_id):
    answer = selectors.answer_get(tenant=request.tenant, message_id=message_id, user=request.user)
    services.answer_stop(tenant=request.tenant, answer_id=answer.pk)
    return HttpResponse(status=204)


@tenant_required
@require_POST
def answer_regenerate(request, message_id):
    answer = selectors.answer_get(tenant=request.tenant, message_id=message_id, user=request.user)
    try:
        new = services.answer_regenerate(tenant=request.tenant, answer=answer,
                                                                 user=request.user)
    except ValidationError as exc:
        return HttpResponse(_errors(exc), status=400)
    answers = list(Message.objects.filter(parent_id=answer.parent_id).order_by("version", "id"))
    return render(request, "chat/_answers.html",
                  {"item": {"question": answer.parent, "answers": answers}, "is_admin": request.membership.is_admin,
                   "focus_id": new.pk})


@tenant_required
@require_POST
def answer_feedback(request, message_id):
    answer = selectors.answer_get(tenant=request.tenant, message_id=message_id, user=request.user)
    try:
        rating = int(request.POST.get("rating", "0"))
        services.feedback_set(tenant=request.tenant, answer=answer, rating=rating,
                              comment=request.POST.get("comment", ""), user=request.user)
    except (ValueError, ValidationError) as exc:
        message = _errors(exc) if isinstance(exc, ValidationError) else _("Choose helpful or not helpful.")
        return HttpResponse(message, status=400)
    answer.refresh_from_db()
    return render(request, "chat/_feedback.html", {"answer": answer, "saved": True})


# ------------------------------------------------------------------ assistants (tenant admins)

@tenant_required
@require_GET
def assistant_list(request):
    assistants = selectors.assistant_list(tenant=request.tenant)
    notes = {a.pk: selectors.assistant_parameter_notes(tenant=request.tenant, assistant=a) for a in assistants}
    return render(request, "chat/assistants.html",
                  {"assistants": assistants, "notes": notes, "is_admin": request.membership.is_admin})


def _assistant_form_page(request, assistant=None):
    initial = None
    if assistant is None:
        # Quoting unless the platform has a real answer model (the same rule as the service's default).
        initial = {"system_prompt": defaults.DEFAULT_SYSTEM_PROMPT, "answer_mode": services.default_answer_mode()}
    form = AssistantForm(request.POST or None, instance=assistant, tenant=request.tenant,
                         target_choices=llm.target_choices(tenant=request.tenant), initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if assistant is None:
                assistant = services.assistant_create(tenant=request.tenant, created_by=request.user,
                                                      **form.service_data())
            else:
                assistant = services.assistant_update(tenant=request.tenant, assistant=assistant,
                                                      **form.service_data())
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, _("Assistant “%(name)s” saved.") % {"name": assistant.name})
            return redirect("chat:assistants")
    notes = selectors.assistant_parameter_notes(tenant=request.tenant, assistant=assistant) if assistant else []
    return render(request, "chat/assistant_form.html", {"form": form, "assistant": assistant, "notes": notes})


@tenant_admin_required
@require_http_methods(["GET", "POST"])
def assistant_create(request):
    return _assistant_form_page(request)


@tenant_admin_required
@require_http_methods(["GET", "POST"])
def assistant_edit(request, assistant_id):
    assistant = selectors.assistant_get(tenant=request.tenant, assistant_id=assistant_id)
    return _assistant_form_page(request, assistant)


@tenant_admin_required
@require_POST
def assistant_delete(request, assistant_id):
    assistant = selectors.assistant_get(tenant=request.tenant, assistant_id=assistant_id)
    services.assistant_delete(tenant=request.tenant, assistant=assistant)
    messages.success(request, _("Assistant deleted."))
    return redirect("chat:assistants")
