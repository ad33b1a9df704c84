"""REST API for chat: assistants, asking (JSON or SSE), conversations, messages, feedback."""

from __future__ import annotations

import re

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_errors import error_body
from accounts.permissions import request_actor
from accounts.schema import errors
from billing.selectors import usage_headers as billing_usage_headers
from chat import answers, selectors, services
from chat.models import Conversation, Message
from chat.payloads import message_payload
from chat.serializers import (
    AssistantSerializer,
    ChatRequestSerializer,
    ChatResponseSerializer,
    ConversationRenameSerializer,
    ConversationSerializer,
    FeedbackSerializer,
    FeedbackStateSerializer,
    MessageSerializer,
    RegenerateResponseSerializer,
)
from chat.sse import sse_relay

SSE_EVENTS = (
    "Events, in order: `meta` {\"message_id\", \"conversation_id\", \"version\", \"status\": \"queued\"} and "
    "`step` {\"step\": \"searching\"} as soon as the question is saved; `meta` again with status \"running\" when a "
    "worker starts; `step` "
    "{\"step\": \"sources\", \"count\": N} (N relevant chunks found; the answer is given them, numbered [1..N]), `step` {\"step\": \"writing\", "
    "\"mode\": \"extractive\"|\"generative\"}, `token` {\"text\"} per delta, then `done` {\"status\", \"message\"} "
    "(the saved message with `citations`, `sources`, `answered_by`) or `error` {\"code\", \"message\", "
    "\"status\"}. `reset` {} (drop the text so far) comes when an answer restarts, e.g. a redelivered task. "
    "Clients should ignore event kinds they do not know. Event ids resume with Last-Event-ID on "
    "GET /api/v1/messages/{id}/stream."
)
# One server-sent event as a client parses it (OpenAPI 3.0: the schema of an event stream describes each event).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "description": "The event kind (see the description); `message` when absent."},
        "data": {"type": "string", "description": "The event's fields as JSON."},
        "id": {"type": "string", "description": "Redis stream id: resume after it with Last-Event-ID."},
        "retry": {"type": "integer"},
    },
}
SSE_DOC = OpenApiResponse(
    response=SSE_EVENT_SCHEMA,
    description="text/event-stream when stream=true. The response starts once the first token (or a failure) is "
                "known, so a failure before any text still gets its HTTP status; the steps before it arrive "
                "first. To watch the steps live, follow GET /api/v1/messages/{id}/stream. " + SSE_EVENTS,
)
SSE_FOLLOW_DOC = OpenApiResponse(
    response=SSE_EVENT_SCHEMA,
    description="text/event-stream, live from the answer's first event (progress steps included). " + SSE_EVENTS,
)


def answer_usage_headers(status_code: int) -> list[OpenApiParameter]:
    """The answer's own X-Usage-* response headers (billing's headers also carry the month's usage and allowance).
    They count more than the body's `usage`, which is the answer call alone (OpenAI's semantics)."""
    def header(name, kind, description):
        return OpenApiParameter(name, kind, OpenApiParameter.HEADER, response=[status_code], description=description)

    return [
        header("X-Usage-Message-Tokens", int,
               "Tokens of every model call made for this answer, as the usage ledger bills them: condensing a "
               "follow-up, the search's query embedding, expansion and compression, and the answer call. The "
               "body's `usage` counts only the answer call, so this is at least its input + output tokens. "
               "Absent on a stream (sent before the answer is done)."),
        header("X-Usage-Message-Cost", str, "The cost of the same calls (a decimal string)."),
    ]


# What a failed answer can answer with (documented on the asking operations); anything else an upstream
# said, e.g. its own 401 or 422, is a failed upstream: 502.
ANSWER_ERRORS = (400, 403, 404, 429, 502, 503, 504)


def error_response(data: dict) -> Response:
    """An answer's `error` event as an API error: its HTTP status, and Retry-After for quota limits."""
    code = int(data.get("status") or 502)
    if code not in ANSWER_ERRORS:
        code = 502  # a failed upstream is never reported as our own 500
    body = error_body(data.get("code") or "upstream_error", data.get("message") or "The answer failed.")
    body["error"].update(data.get("details") or {})  # quota: limit, scope, reset_at, retry_after_s
    response = Response(body, status=code)
    if data.get("retry_after") is not None:
        response["Retry-After"] = str(int(data["retry_after"]))
    return response


def usage_header_values(*, request, answer_id: int | None) -> dict[str, str]:
    """Tokens used and allowance left (billing's X-Usage-* headers)."""
    return billing_usage_headers(tenant=request.tenant, message_id=answer_id,
                                 api_key=getattr(request, "api_key", None))


def usage_headers(response, *, request, answer_id: int | None, values: dict | None = None):
    for name, value in (values if values is not None else usage_header_values(request=request,
                                                                              answer_id=answer_id)).items():
        response[name] = str(value)
    return response


STREAM_ID_PATTERN = r"^\d{1,20}(-\d{1,20})?$"  # a Redis stream entry id: <ms>-<seq>, or <ms> (0: the start)
STREAM_ID = re.compile(STREAM_ID_PATTERN, re.ASCII)
UINT64_MAX = 2**64 - 1


def stream_position(request) -> str:
    """Where a resumed stream starts (Last-Event-ID, else ?after=, else the beginning). Checked here, before the
    200 headers go out: Redis refuses a malformed id only once the stream is being read."""
    for name, value in (("Last-Event-ID", request.headers.get("Last-Event-ID")),
                        ("after", request.GET.get("after"))):  # GET: a DRF or a plain Django request
        if not value:
            continue
        value = value.strip()
        if not STREAM_ID.match(value) or any(int(part) > UINT64_MAX for part in value.split("-")):
            raise serializers.ValidationError(
                {name: ['An event id as sent in the stream\'s "id:" lines (<milliseconds>-<sequence>), or 0.']})
        return value
    return "0"


def sse_response(request, message_id: int, prelude: list | tuple = ()) -> StreamingHttpResponse:
    after = "0" if prelude else stream_position(request)
    response = StreamingHttpResponse(sse_relay(tenant=request.tenant, message_id=message_id, after=after,
                                               prelude=prelude),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def answer_response(request, question: Message | None, answer: Message, *, stream: bool,
                    created: bool = True):
    """Wait for the answer (JSON) or for its first token (stream), mapping failures to HTTP statuses."""
    if stream:
        # Headers are worked out while the worker prepares, so the first token goes out as soon as it exists.
        headers = usage_header_values(request=request, answer_id=None)
        kind, data, prelude = answers.wait_for_start(tenant=request.tenant, message_id=answer.pk)
        if kind == "error":
            return error_response(data)
        return usage_headers(sse_response(request, answer.pk, prelude), request=request, answer_id=answer.pk,
                             values=headers)
    kind, data = answers.wait_for_end(tenant=request.tenant, message_id=answer.pk)
    if kind == "error":
        return error_response(data)
    if kind == "timeout":
        return Response(error_body("timeout", "The answer is taking too long; fetch it later from "
                                   f"/api/v1/messages/{answer.pk}."), status=status.HTTP_504_GATEWAY_TIMEOUT)
    answer.refresh_from_db()
    body = {"conversation_id": answer.conversation_id, "answer": message_payload(answer)}
    if question is not None:
        body["question"] = message_payload(question)
    response = Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
    return usage_headers(response, request=request, answer_id=answer.pk)


# ------------------------------------------------------------------ assistants

class AssistantListCreate(generics.ListCreateAPIView):
    serializer_class = AssistantSerializer
    required_scopes = {"GET": "read", "POST": "admin"}

    def get_queryset(self):
        return selectors.assistant_list(tenant=self.request.tenant)

    @extend_schema(summary="Create an assistant (admin scope)")
    def post(self, request):
        serializer = AssistantSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        assistant = services.assistant_create(tenant=request.tenant,
                                              created_by=request_actor(request)["user"],
                                              **serializer.validated_data)
        return Response(AssistantSerializer(assistant, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


class AssistantDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = AssistantSerializer
    required_scopes = {"GET": "read", "PUT": "admin", "PATCH": "admin", "DELETE": "admin"}

    def get_object(self):
        return selectors.assistant_get(tenant=self.request.tenant, assistant_id=self.kwargs["assistant_id"])

    def update(self, request, *args, partial=False, **kwargs):
        assistant = self.get_object()
        serializer = AssistantSerializer(assistant, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        services.assistant_update(tenant=request.tenant, assistant=assistant, **serializer.validated_data)
        return Response(AssistantSerializer(assistant, context={"request": request}).data)

    def destroy(self, request, *args, **kwargs):
        services.assistant_delete(tenant=request.tenant, assistant=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class AssistantChat(APIView):
    required_scopes = {"POST": "chat"}

    @extend_schema(
        request=ChatRequestSerializer,
        responses={201: ChatResponseSerializer, (200, "text/event-stream"): SSE_DOC},
        parameters=answer_usage_headers(201),
        summary="Ask an assistant (JSON answer, or an SSE stream with stream=true)",
        description="Grounded answer from the assistant's knowledge bases: `answer.citations` are the chunks it "
                    "cites, `answer.sources` every chunk it was given, `answer.answered_by` what wrote it "
                    "(extractive quotes or a generative model). Errors: 404 unknown "
                    "assistant or conversation, 400 bad field, 403 missing 'chat' scope, 429 quota (Retry-After), "
                    "502/503 model failure.",
        extensions=errors(*ANSWER_ERRORS),
    )
    def post(self, request, assistant_id):
        assistant = selectors.assistant_get(tenant=request.tenant, assistant_id=assistant_id)
        serializer = ChatRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        conversation = None
        if data.get("conversation_id"):
            conversation = selectors.conversation_get(tenant=request.tenant, conversation_id=data["conversation_id"],
                                                      **request_actor(request))
        question, answer = services.question_ask(
            tenant=request.tenant, assistant=assistant, conversation=conversation, content=data["message"],
            source=Conversation.Source.API, **request_actor(request),
        )
        return answer_response(request, question, answer, stream=data["stream"])


# ------------------------------------------------------------------ conversations and messages

class ConversationList(generics.ListAPIView):
    serializer_class = ConversationSerializer

    @extend_schema(parameters=[OpenApiParameter("q", str, description="Search titles and messages")])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.conversation_list(tenant=self.request.tenant, query=self.request.query_params.get("q", ""),
                                           **request_actor(self.request))


class ConversationDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = ConversationSerializer
    required_scopes = {"GET": "read", "PUT": "chat", "PATCH": "chat", "DELETE": "chat"}

    def get_object(self):
        return selectors.conversation_get(tenant=self.request.tenant, conversation_id=self.kwargs["conversation_id"],
                                          **request_actor(self.request))

    @extend_schema(request=ConversationRenameSerializer, responses=ConversationSerializer, summary="Rename")
    def update(self, request, *args, **kwargs):
        conversation = self.get_object()
        serializer = ConversationRenameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.conversation_rename(tenant=request.tenant, conversation=conversation,
                                     title=serializer.validated_data["title"])
        return Response(ConversationSerializer(conversation).data)

    def destroy(self, request, *args, **kwargs):
        services.conversation_delete(tenant=request.tenant, conversation=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConversationMessages(generics.ListAPIView):
    serializer_class = MessageSerializer

    def get_queryset(self):
        conversation = selectors.conversation_get(
            tenant=self.request.tenant, conversation_id=self.kwargs["conversation_id"],
            **request_actor(self.request))
        return selectors.message_list(conversation=conversation)


class MessageDetail(APIView):
    @extend_schema(responses=MessageSerializer, summary="One message (an answer shows its status and citations)")
    def get(self, request, message_id):
        message = selectors.message_get(tenant=request.tenant, message_id=message_id, **request_actor(request))
        return Response(message_payload(message))


class MessageStream(APIView):
    @extend_schema(responses={(200, "text/event-stream"): SSE_FOLLOW_DOC},
                   parameters=[
                       OpenApiParameter("after", str, pattern=STREAM_ID_PATTERN,
                                        description="Resume after this event id (an `id:` of the stream; 0: from "
                                                    "the start)"),
                       OpenApiParameter("Last-Event-ID", str, OpenApiParameter.HEADER, pattern=STREAM_ID_PATTERN,
                                        description="What EventSource sends when it reconnects; wins over `after`"),
                   ],
                   summary="Follow an answer as server-sent events (resumable)")
    def get(self, request, message_id):
        answer = selectors.answer_get(tenant=request.tenant, message_id=message_id, **request_actor(request))
        return sse_response(request, answer.pk)


class MessageStop(APIView):
    required_scopes = {"POST": "chat"}

    @extend_schema(request=None, responses={202: MessageSerializer}, summary="Stop an answer (keeps the partial text)")
    def post(self, request, message_id):
        answer = selectors.answer_get(tenant=request.tenant, message_id=message_id, **request_actor(request))
        services.answer_stop(tenant=request.tenant, answer_id=answer.pk)
        answer.refresh_from_db()
        return Response(message_payload(answer), status=status.HTTP_202_ACCEPTED)


class MessageRegenerate(APIView):
    required_scopes = {"POST": "chat"}

    @extend_schema(request=None, parameters=[OpenApiParameter("stream", bool), *answer_usage_headers(201)],
                   responses={201: RegenerateResponseSerializer, (200, "text/event-stream"): SSE_DOC},
                   extensions=errors(*ANSWER_ERRORS),
                   summary="Answer the same question again (a new version; older versions stay)")
    def post(self, request, message_id):
        answer = selectors.answer_get(tenant=request.tenant, message_id=message_id, **request_actor(request))
        # The body is optional ({"stream": bool}); check it before regenerating, so a bad one changes nothing.
        body = request.data
        if not isinstance(body, dict) or set(body) - {"stream"}:
            raise serializers.ValidationError({"non_field_errors": ['Send no body or {"stream": true|false}.']})
        stream = str(request.query_params.get("stream", body.get("stream", ""))).lower() in ("1", "true")
        new = services.answer_regenerate(tenant=request.tenant, answer=answer, **request_actor(request))
        return answer_response(request, None, new, stream=stream)


class MessageFeedback(APIView):
    required_scopes = {"GET": "read", "PUT": "chat", "POST": "chat"}

    def _answer(self, request, message_id):
        return selectors.answer_get(tenant=request.tenant, message_id=message_id, **request_actor(request))

    @extend_schema(responses=FeedbackStateSerializer, summary="The feedback on an answer (rating null: none yet)")
    def get(self, request, message_id):
        feedback = selectors.feedback_for(message=self._answer(request, message_id))
        if feedback is None:
            return Response({"rating": None, "comment": "", "updated_at": None})
        return Response(FeedbackSerializer(feedback).data)

    @extend_schema(request=FeedbackSerializer, responses=FeedbackSerializer,
                   summary="Rate an answer (1 or -1) with an optional comment; again replaces it")
    def put(self, request, message_id):
        answer = self._answer(request, message_id)
        serializer = FeedbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        feedback = services.feedback_set(tenant=request.tenant, answer=answer, **serializer.validated_data,
                                         **request_actor(request))
        return Response(FeedbackSerializer(feedback).data)

    @extend_schema(request=FeedbackSerializer, responses=FeedbackSerializer, summary="Same as PUT")
    def post(self, request, message_id):
        return self.put(request, message_id)
