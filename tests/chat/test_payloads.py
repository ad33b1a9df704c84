"""The message payload has one declared shape (chat.payloads): what message_payload builds is what the OpenAPI
serializers generated from it document, key for key, nested shapes included."""

from __future__ import annotations

from datetime import UTC, datetime

from rest_framework import serializers

from chat.models import Message
from chat.payloads import message_payload
from chat.serializers import MessageSerializer

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SOURCES = [{"n": n, "chunk_id": 100 + n, "document_id": 200 + n, "kb_id": 1, "title": f"Doc {n}", "page": None,
            "heading": "Guide > Install", "snippet": "text"} for n in (1, 2)]


def assert_documented(payload: dict, serializer: serializers.Serializer, *, every_key: bool) -> None:
    """Every key the payload has is documented (recursively), and every required one is there; with
    every_key, every documented key is there too."""
    fields = serializer.fields
    assert set(payload) <= set(fields), f"undocumented: {set(payload) - set(fields)}"
    expected = set(fields) if every_key else {name for name, field in fields.items() if field.required}
    assert set(payload) == expected
    for name, value in payload.items():
        field = fields[name]
        if isinstance(field, serializers.ListSerializer):
            for item in value:
                assert_documented(item, field.child, every_key=True)
        elif isinstance(field, serializers.Serializer) and value is not None:
            assert_documented(value, field, every_key=True)


def test_a_question_payload_has_exactly_the_required_keys():
    question = Message(pk=1, conversation_id=2, role=Message.Role.USER, content="Refunds?", created_at=NOW)
    assert_documented(message_payload(question), MessageSerializer(), every_key=False)


def test_an_answer_payload_has_every_documented_key_nested_shapes_included():
    answer = Message(pk=3, conversation_id=2, parent_id=1, role=Message.Role.ASSISTANT, content="30 days [1].",
                     status=Message.Status.FAILED, created_at=NOW, finished_at=NOW, sources=SOURCES,
                     citations=SOURCES[:1], error_code="timeout", error="Too slow.", model="fake",
                     input_tokens=10, output_tokens=3)
    payload = message_payload(answer)
    assert_documented(payload, MessageSerializer(), every_key=True)
    assert payload["error"] == {"code": "timeout", "message": "Too slow."}
    assert [s["cited"] for s in payload["sources"]] == [True, False]
    assert payload["citations"][0]["url"] == "/knowledge/documents/201/"


def test_the_serializer_renders_the_payload():
    answer = Message(pk=3, conversation_id=2, role=Message.Role.ASSISTANT, created_at=NOW)
    assert MessageSerializer(answer).data == message_payload(answer)
