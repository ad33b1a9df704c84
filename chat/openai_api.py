"""OpenAI-compatible chat completions: point any OpenAI client at /api/v1/openai with a ragdesk API key.

`model` names an assistant (its name or id). The caller's earlier user/assistant turns become the
conversation's history (used to condense the follow-up), the last user message is the question, and the
answer is grounded in the assistant's knowledge bases. Caller `system` messages are ignored: the assistant's
system prompt governs. Extensions (top level, and on the final stream chunk): `citations` (the chunks the
answer cites), `sources` (every chunk it was given) and `ragdesk` ({conversation_id, message_id, status,
answered_by, warnings}).
"""

from __future__ import annotations

import json
import time

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_errors import error_body
from accounts.permissions import request_actor
from accounts.schema import errors
from chat import answers, defaults, selectors, services
from chat.api import (
    ANSWER_ERRORS,
    SSE_EVENT_SCHEMA,
    answer_usage_headers,
    error_response,
    usage_header_values,
    usage_headers,
)
from chat.models import Message
from chat.payloads import message_payload
from chat.sse import answer_events


class ModelNotFound(exceptions.NotFound):
    default_code = "model_not_found"


def _range_field(name: str, **extra):
    _default, low, high = defaults.PARAM_RANGES[name]
    return serializers.FloatField(min_value=low, max_value=high, required=False, allow_null=True, **extra)


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant", "tool"])
    content = serializers.JSONField(required=False, allow_null=True)

    def validate_content(self, value):
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, list):  # content parts: only text parts are meaningful here
            return "".join(p.get("text", "") for p in value if isinstance(p, dict) and p.get("type") == "text")
        raise serializers.ValidationError("content must be a string or a list of content parts")


class CompletionRequestSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=200, help_text="Assistant name or id")
    messages = ChatMessageSerializer(many=True, allow_empty=False)
    stream = serializers.BooleanField(default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    temperature = _range_field("temperature")
    top_p = _range_field("top_p")
    presence_penalty = _range_field("presence_penalty")
    frequency_penalty = _range_field("frequency_penalty")
    max_tokens = serializers.IntegerField(min_value=1, max_value=32768, required=False, allow_null=True)
    max_completion_tokens = serializers.IntegerField(min_value=1, max_value=32768, required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True)
    response_format = serializers.DictField(required=False, allow_null=True)

    def validate_n(self, value):
        if value not in (None, 1):
            raise serializers.ValidationError("only n=1 is supported")
        return value

    def validate_messages(self, value):
        turns = [m for m in value if m["role"] in ("user", "assistant")]
        if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
            raise serializers.ValidationError("the last message must be a non-empty user message")
        return value

    def validate_response_format(self, value):
        if not value:
            return None
        kind = value.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise serializers.ValidationError("type must be text, json_object or json_schema")
        if kind == "json_schema" and not isinstance((value.get("json_schema") or {}).get("schema"), dict):
            raise serializers.ValidationError("json_schema.schema must be a JSON schema object")
        return value


def split_turns(messages: list[dict]) -> tuple[list[tuple[str, str]], str]:
    """(earlier (question, answer) pairs, the last question) from OpenAI-style messages."""
    pairs: list[tuple[str, str]] = []
    pending_user: list[str] = []
    turns = [m for m in messages if m["role"] in ("user", "assistant")]
    for message in turns[:-1]:
        if message["role"] == "user":
            pending_user.append(message["content"])
        elif pending_user:
            pairs.append(("\n".join(pending_user), message["content"]))
            pending_user = []
    question = "\n".join([*pending_user, turns[-1]["content"]])
    return pairs, question


def overrides_from(data: dict) -> dict:
    overrides = {name: data[name] for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty")
                 if data.get(name) is not None}
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    if max_tokens:
        overrides["max_tokens"] = max_tokens
    response_format = data.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        overrides["json_schema"] = response_format["json_schema"]["schema"]
    elif response_format.get("type") == "json_object":
        overrides["json_schema"] = {"type": "object"}
    return overrides


def completion_usage(message: dict) -> dict:
    usage = message.get("usage") or {}
    prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": usage.get("cached_input_tokens", 0)}}


def _finish_reason(message: Message | dict) -> str:
    reason = message.finish_reason if isinstance(message, Message) else message.get("finish_reason", "")
    return "length" if reason == "length" else "stop"


def _extension(payload: dict) -> dict:
    return {"conversation_id": payload["conversation_id"], "message_id": payload["id"], "status": payload["status"],
            "answered_by": payload.get("answered_by", ""), "warnings": payload.get("warnings", [])}


def completion_body(answer: Message, *, model: str, created: int) -> dict:
    """A finished answer as an OpenAI chat.completion object, with ragdesk's extension fields."""
    payload = message_payload(answer)
    return {
        "id": f"chatcmpl-{answer.pk}", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.content},
                     "finish_reason": _finish_reason(answer)}],
        "usage": completion_usage(payload),
        "citations": payload["citations"],
        "sources": payload["sources"],
        "ragdesk": _extension(payload),
    }


async def completion_chunks(*, tenant, message_id: int, model: str, created: int, include_usage: bool,
                            prelude: list | tuple = ()):
    chunk_id = f"chatcmpl-{message_id}"

    def chunk(delta: dict, finish_reason=None, **extra) -> str:
        body = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    sent_role = False
    async for _id, kind, data in answer_events(tenant=tenant, message_id=message_id, prelude=prelude):
        if kind == "ping":
            yield ": keep-alive\n\n"
        elif kind == "token":
            delta = {"content": data.get("text", "")}
            if not sent_role:
                delta["role"], sent_role = "assistant", True
            yield chunk(delta)
        elif kind == "done":
            message = data["message"]
            if not sent_role:
                yield chunk({"role": "assistant", "content": ""})
            yield chunk({}, _finish_reason(message), citations=message.get("citations", []),
                        sources=message.get("sources", []), ragdesk=_extension(message))
            if include_usage:
                body = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": completion_usage(message)}
                yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
            return
        elif kind == "error":
            yield f"data: {json.dumps({'error': {'message': data.get('message'), 'type': data.get('code'), 'code': data.get('code')}}, ensure_ascii=False)}\n\n"
            return


COMPLETION_DOC = (
    "An OpenAI chat.completion object plus `citations` (the chunks the answer cites), `sources` (every chunk it "
    "was given, each with `cited`) and `ragdesk` ({conversation_id, message_id, status, answered_by: "
    "extractive|generative, warnings}); with stream=true, text/event-stream of chat.completion.chunk events whose "
    "final chunk carries the same extensions, ending with data: [DONE]. `usage` counts the model call that wrote "
    "the answer, as OpenAI's does; X-Usage-Message-Tokens counts every call made for it (see the header)."
)


class ChatCompletions(APIView):
    required_scopes = {"POST": "chat"}

    @extend_schema(
        request=CompletionRequestSerializer,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description=COMPLETION_DOC),
                   (200, "text/event-stream"): OpenApiResponse(SSE_EVENT_SCHEMA, description=COMPLETION_DOC)},
        parameters=answer_usage_headers(200),
        summary="OpenAI-compatible chat completions (model = assistant name or id)",
        extensions=errors(*ANSWER_ERRORS),
    )
    def post(self, request):
        serializer = CompletionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        assistant = selectors.assistant_by_model_name(tenant=request.tenant, model=data["model"])
        if assistant is None:
            raise ModelNotFound(f"The model '{data['model']}' does not exist: use an assistant's name or id "
                                "(GET /api/v1/openai/models).")
        turns, question = split_turns(data["messages"])
        answer = services.openai_ask(tenant=request.tenant, assistant=assistant, turns=turns, question=question,
                                     overrides=overrides_from(data), **request_actor(request))
        created = int(time.time())
        if data["stream"]:
            headers = usage_header_values(request=request, answer_id=None)
            kind, event, prelude = answers.wait_for_start(tenant=request.tenant, message_id=answer.pk)
            if kind == "error":
                return error_response(event)
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            response = StreamingHttpResponse(
                completion_chunks(tenant=request.tenant, message_id=answer.pk, model=assistant.name,
                                  created=created, include_usage=include_usage, prelude=prelude),
                content_type="text/event-stream",
            )
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return usage_headers(response, request=request, answer_id=answer.pk, values=headers)
        kind, event = answers.wait_for_end(tenant=request.tenant, message_id=answer.pk)
        if kind == "error":
            return error_response(event)
        if kind == "timeout":
            return Response(error_body("timeout", "The answer is taking too long."), status=504)
        answer.refresh_from_db()
        body = completion_body(answer, model=assistant.name, created=created)
        return usage_headers(Response(body, status=status.HTTP_200_OK), request=request, answer_id=answer.pk)


class ModelList(APIView):
    @extend_schema(responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="OpenAI model list: one "
                                                   "model per assistant")},
                   summary="OpenAI-compatible model list (the tenant's assistants)")
    def get(self, request):
        data = [{"id": a.name, "object": "model", "created": int(a.created_at.timestamp()),
                 "owned_by": request.tenant.slug, "ragdesk_assistant_id": a.pk}
                for a in selectors.assistant_list(tenant=request.tenant)]
        return Response({"object": "list", "data": data})
