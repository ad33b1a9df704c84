from __future__ import annotations

from django.urls import NoReverseMatch, reverse
from rest_framework import serializers

from chat import defaults
from chat.models import Assistant, Conversation, Feedback, Message

_DOCUMENT_ROUTES = ("knowledge:document-detail", "knowledge:document", "knowledge:document_detail")


def document_url(document_id: int | None) -> str:
    """Link to a cited document's page in the knowledge app (empty when that page does not exist)."""
    if document_id is None:
        return ""
    for name in _DOCUMENT_ROUTES:
        try:
            return reverse(name, kwargs={"document_id": document_id})
        except NoReverseMatch:
            continue
    return ""


def citation_payload(citation: dict) -> dict:
    return {**citation, "url": document_url(citation.get("document_id"))}


def given_sources(message: Message) -> list[dict]:
    """Every chunk the answer was given ([1..n] as in the prompt). Answers saved before sources were kept
    fall back to their citations, so the cited chunks are always among the sources."""
    return list(message.sources or message.citations or [])


def source_payloads(message: Message) -> list[dict]:
    """The given chunks in their own order ([1..n]), each with its link and whether the answer cites it."""
    cited = {c.get("n") for c in message.citations or []}
    return [{**citation_payload(s), "cited": s.get("n") in cited} for s in given_sources(message)]


def usage_estimated(message: Message) -> bool:
    """Counted offline because the provider reported no counts. An answer no model wrote (extractive, or the
    "no relevant documents" reply) used no tokens, so there is nothing to estimate."""
    return bool(message.usage_estimated and (message.input_tokens or message.output_tokens))


def message_payload(message: Message) -> dict:
    """One message as the API, the SSE `done` event and the OpenAI extension field show it."""
    data = {
        "id": message.pk,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": message.created_at.isoformat() if message.created_at else None,
    }
    if message.role == Message.Role.ASSISTANT:
        data.update({
            "question_id": message.parent_id,
            "version": message.version,
            "citations": [citation_payload(c) for c in message.citations or []],
            "sources": source_payloads(message),
            "answered_by": message.answered_by,
            "error": {"code": message.error_code, "message": message.error} if message.error_code else None,
            "model": message.model,
            "usage": {
                "input_tokens": message.input_tokens,
                "cached_input_tokens": message.cached_input_tokens,
                "output_tokens": message.output_tokens,
                "estimated": usage_estimated(message),
            },
            "ignored_params": message.ignored_params or [],
            "warnings": message.warnings or [],
            "finished_at": message.finished_at.isoformat() if message.finished_at else None,
        })
    return data


class CitationSerializer(serializers.Serializer):
    n = serializers.IntegerField(help_text="The number the answer text uses: [n].")
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    kb_id = serializers.IntegerField()
    title = serializers.CharField(help_text="Document title.")
    page = serializers.IntegerField(allow_null=True, help_text="Page (PDF), else null.")
    heading = serializers.CharField(required=False, help_text="Heading path, e.g. 'Guide > Install'.")
    snippet = serializers.CharField(help_text="The start of the chunk's text.")
    url = serializers.CharField(help_text="The document's page in the web app.")


class SourceSerializer(CitationSerializer):
    cited = serializers.BooleanField(help_text="Whether the answer cites this chunk (it is then in `citations`).")


class UsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    estimated = serializers.BooleanField(
        help_text="true only when the provider reported no token counts for the answer (e.g. a stream cut off "
                  "before its final usage report) and they were counted offline; an extractive answer uses no "
                  "tokens and is never estimated.")


class ErrorInfoSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class MessageSerializer(serializers.Serializer):
    """Documentation of message_payload (what the endpoints return)."""

    id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    role = serializers.ChoiceField(choices=Message.Role.choices)
    content = serializers.CharField()
    status = serializers.ChoiceField(choices=Message.Status.choices)
    created_at = serializers.DateTimeField()
    question_id = serializers.IntegerField(required=False, allow_null=True)
    version = serializers.IntegerField(required=False)
    citations = CitationSerializer(many=True, required=False,
                                   help_text="The chunks the answer cites as [n] (a subset of `sources`).")
    sources = SourceSerializer(many=True, required=False,
                               help_text="Every chunk the answer was given, numbered [1..n] as in the prompt, cited "
                                         "or not. Empty when no relevant chunk was found.")
    answered_by = serializers.ChoiceField(
        choices=["extractive", "generative", ""], required=False,
        help_text="What wrote the answer: `extractive` (passages quoted from the documents, no model) or "
                  "`generative` (the model named in `model`); empty while it is being prepared.")
    error = ErrorInfoSerializer(required=False, allow_null=True)
    model = serializers.CharField(required=False)
    usage = UsageSerializer(required=False)
    ignored_params = serializers.ListField(child=serializers.CharField(), required=False)
    warnings = serializers.ListField(child=serializers.CharField(), required=False)
    finished_at = serializers.DateTimeField(required=False, allow_null=True)

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
        from chat.services import parameter_notes

        request = self.context.get("request")
        return parameter_notes(obj, tenant=getattr(request, "tenant", None))



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
