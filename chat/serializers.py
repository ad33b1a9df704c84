from __future__ import annotations

import functools
from types import UnionType
from typing import Annotated, Literal, NotRequired, Union, get_args, get_origin, get_type_hints, is_typeddict

from django.db.models import Choices
from rest_framework import serializers

from chat import defaults
from chat.models import Assistant, Conversation, Feedback
from chat.payloads import IsoDateTime, MessagePayload, message_payload
from chat.selectors import assistant_parameter_notes

SCALAR_FIELDS = {int: serializers.IntegerField, str: serializers.CharField, bool: serializers.BooleanField,
                 IsoDateTime: serializers.DateTimeField}


def _schema_field(hint, **options) -> serializers.Field:
    """The DRF field that documents one key of a payload TypedDict (chat.payloads)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is NotRequired:
        return _schema_field(args[0], **{**options, "required": False})
    if origin is Annotated:
        return _schema_field(args[0], **{**options, "help_text": args[1]})
    if origin in (UnionType, Union):  # X | None
        (hint,) = set(args) - {type(None)}
        return _schema_field(hint, **{**options, "allow_null": True})
    if origin is Literal:
        return serializers.ChoiceField(choices=list(args), **options)
    if origin is list:
        if is_typeddict(args[0]):
            return payload_serializer(args[0])(many=True, **options)
        return serializers.ListField(child=_schema_field(args[0]), **options)
    if is_typeddict(hint):
        return payload_serializer(hint)(**options)
    if hint in SCALAR_FIELDS:
        return SCALAR_FIELDS[hint](**options)
    if issubclass(hint, Choices):
        return serializers.ChoiceField(choices=hint.choices, **options)
    raise TypeError(f"No schema field for {hint!r}")


@functools.cache  # one class per TypedDict, so the schema has one component for it
def payload_serializer(shape: type) -> type[serializers.Serializer]:
    """A serializer documenting a payload TypedDict: its keys, types, optional keys and descriptions."""
    fields = {name: _schema_field(hint) for name, hint in get_type_hints(shape, include_extras=True).items()}
    return type(f"{shape.__name__}Serializer", (serializers.Serializer,),
                {**fields, "__doc__": shape.__doc__, "__module__": __name__})


class MessageSerializer(payload_serializer(MessagePayload)):
    """Documentation of message_payload (what the endpoints return)."""

    def to_representation(self, instance):
        return message_payload(instance)


class FewShotSerializer(serializers.Serializer):
    user = serializers.CharField(max_length=4000)
    assistant = serializers.CharField(max_length=8000)


def _param(name: str, *, integer: bool = False, **extra):
    default, low, high = defaults.PARAM_RANGES[name]
    field = serializers.IntegerField if integer else serializers.FloatField
    return field(min_value=low, max_value=high, required=False, **extra)


class KnowledgeBaseIdsField(serializers.ListField):
    child = serializers.IntegerField()

    def to_representation(self, data):
        return [kb.pk for kb in data.all()] if hasattr(data, "all") else list(data)


class AssistantSerializer(serializers.ModelSerializer):
    knowledge_bases = KnowledgeBaseIdsField(required=False,
                                            help_text="Knowledge base ids; empty means all of the tenant's.")
    few_shot = FewShotSerializer(many=True, required=False)
    temperature = _param("temperature")
    top_p = _param("top_p")
    top_k = _param("top_k", integer=True, allow_null=True)
    max_tokens = _param("max_tokens", integer=True)
    presence_penalty = _param("presence_penalty")
    frequency_penalty = _param("frequency_penalty")
    retrieval = serializers.DictField(required=False, help_text='e.g. {"k": 8, "bm25_weight": 0.45, '
                                      '"dense_weight": 0.55, "min_dense_score": 0.2}')
    json_schema = serializers.JSONField(required=False, allow_null=True)
    parameter_notes = serializers.SerializerMethodField()

    class Meta:
        model = Assistant
        fields = ["id", "name", "description", "knowledge_bases", "answer_mode", "answer_target", "cheap_target",
                  "system_prompt", "few_shot", "temperature", "top_p", "top_k", "max_tokens", "presence_penalty",
                  "frequency_penalty", "context_window", "retrieval", "json_schema", "is_default",
                  "parameter_notes", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at", "parameter_notes"]
        extra_kwargs = {
            "name": {"validators": []},  # uniqueness per tenant is checked by the service
            "answer_mode": {"help_text": "extractive: quote the passages that answer, no model; generative: the "
                                         "answer model writes it; generative_fallback: the model, and quoting when "
                                         "the model is unavailable."},
        }

    def get_parameter_notes(self, obj) -> list[str]:
        request = self.context.get("request")
        return assistant_parameter_notes(tenant=getattr(request, "tenant", None), assistant=obj)



class ConversationSerializer(serializers.ModelSerializer):
    assistant_id = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = Conversation
        fields = ["id", "title", "assistant_id", "source", "created_at", "updated_at"]
        read_only_fields = ["id", "assistant_id", "source", "created_at", "updated_at"]


class ConversationRenameSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)


class ChatRequestSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=8000, trim_whitespace=True,
                                    help_text="The question, in any language.")
    conversation_id = serializers.IntegerField(required=False, allow_null=True,
                                               help_text="Continue this conversation; omit to start one.")
    stream = serializers.BooleanField(default=False,
                                      help_text="true: answer as text/event-stream (step..., meta, token..., done | error).")


class RegenerateResponseSerializer(serializers.Serializer):
    conversation_id = serializers.IntegerField()
    answer = MessageSerializer(help_text="The new version of the answer (question_id names the question).")


class ChatResponseSerializer(RegenerateResponseSerializer):
    question = MessageSerializer()
    answer = MessageSerializer()


class FeedbackSerializer(serializers.ModelSerializer):
    rating = serializers.ChoiceField(choices=[1, -1], help_text="1 helpful, -1 not helpful")
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000)

    class Meta:
        model = Feedback
        fields = ["rating", "comment", "updated_at"]
        read_only_fields = ["updated_at"]


class FeedbackStateSerializer(FeedbackSerializer):
    """GET feedback: what was given, or rating and updated_at null when there is none yet."""

    rating = serializers.ChoiceField(choices=[1, -1], allow_null=True, help_text="1 helpful, -1 not helpful, "
                                                                                  "null: no feedback yet")
    updated_at = serializers.DateTimeField(allow_null=True, read_only=True)
