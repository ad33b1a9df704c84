"""A chat message as JSON: the API, the SSE `done` event and the OpenAI extension fields all show this shape.

The TypedDicts are the one declaration of it. `message_payload` builds it as plain dicts, because it runs for
every finished answer and every poll of an answer, where DRF's per-field machinery costs more than the payload
itself; `chat.serializers` generates the OpenAPI serializers from the same TypedDicts, so the documented shape
and the real one cannot drift. `Annotated` metadata is the field's description in the schema.
"""

from __future__ import annotations

from typing import Annotated, Literal, NewType, NotRequired, TypedDict

from django.urls import reverse

from chat.models import Message

IsoDateTime = NewType("IsoDateTime", str)  # datetime.isoformat(); documented as an OpenAPI date-time


class Citation(TypedDict):
    n: Annotated[int, "The number the answer text uses: [n]."]
    chunk_id: int
    document_id: int
    kb_id: int
    title: Annotated[str, "Document title."]
    page: Annotated[int | None, "Page (PDF), else null."]
    heading: NotRequired[Annotated[str, "Heading path, e.g. 'Guide > Install'."]]
    snippet: Annotated[str, "The start of the chunk's text."]
    url: Annotated[str, "The document's page in the web app."]


class Source(Citation):
    cited: Annotated[bool, "Whether the answer cites this chunk (it is then in `citations`)."]


class Usage(TypedDict):
    """Tokens of the one model call that wrote this answer (the `answer` stage), counted as OpenAI's `usage`
    counts a completion. The `X-Usage-Message-Tokens` header of the chat responses counts more: every model
    call made for the answer (condensing a follow-up, query expansion and compression, embeddings, and this
    one), as the usage ledger bills them."""

    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    estimated: Annotated[bool, (
        "true only when the provider reported no token counts for the answer (e.g. a stream cut off before its "
        "final usage report) and they were counted offline; an extractive answer uses no tokens and is never "
        "estimated.")]


class ErrorInfo(TypedDict):
    code: str
    message: str


class MessagePayload(TypedDict):
    id: int
    conversation_id: int
    role: Message.Role
    content: str
    status: Message.Status
    created_at: IsoDateTime
    # An answer's fields (absent on a question):
    question_id: NotRequired[int | None]
    version: NotRequired[int]
    citations: NotRequired[Annotated[list[Citation],
                                     "The chunks the answer cites as [n] (a subset of `sources`)."]]
    sources: NotRequired[Annotated[list[Source], (
        "Every chunk the answer was given, numbered [1..n] as in the prompt, cited or not. Empty when no "
        "relevant chunk was found.")]]
    answered_by: NotRequired[Annotated[Literal["extractive", "generative", ""], (
        "What wrote the answer: `extractive` (passages quoted from the documents, no model) or `generative` "
        "(the model named in `model`); empty while it is being prepared.")]]
    error: NotRequired[ErrorInfo | None]
    model: NotRequired[str]
    usage: NotRequired[Usage]
    ignored_params: NotRequired[list[str]]
    warnings: NotRequired[list[str]]
    finished_at: NotRequired[IsoDateTime | None]


def document_url(document_id: int | None) -> str:
    """Link to a cited document's page in the knowledge app."""
    return "" if document_id is None else reverse("knowledge:document-detail", kwargs={"document_id": document_id})


def citation_payload(citation: dict) -> Citation:
    return {**citation, "url": document_url(citation.get("document_id"))}


def given_sources(message: Message) -> list[dict]:
    """Every chunk the answer was given ([1..n] as in the prompt). Answers saved before sources were kept
    fall back to their citations, so the cited chunks are always among the sources."""
    return list(message.sources or message.citations or [])


def source_payloads(message: Message) -> list[Source]:
    """The given chunks in their own order ([1..n]), each with its link and whether the answer cites it."""
    cited = {c.get("n") for c in message.citations or []}
    return [{**citation_payload(s), "cited": s.get("n") in cited} for s in given_sources(message)]


def usage_estimated(message: Message) -> bool:
    """Counted offline because the provider reported no counts. An answer no model wrote (extractive, or the
    "no relevant documents" reply) used no tokens, so there is nothing to estimate."""
    return bool(message.usage_estimated and (message.input_tokens or message.output_tokens))


def message_payload(message: Message) -> MessagePayload:
    data: MessagePayload = {
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
