"""What a model call used and on whose behalf: produced by the LLM gateway and embedders, consumed by the
usage ledger. Lives in billing because billing sits below llm in the dependency order."""

from __future__ import annotations

from dataclasses import dataclass


class Stage:
    EMBEDDING = "embedding"
    CONDENSE = "condense"
    EXPANSION = "expansion"
    COMPRESSION = "compression"
    ANSWER = "answer"
    RERANK = "rerank"


@dataclass
class Usage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # True when the provider reported nothing and we counted offline


@dataclass
class UsageContext:
    """Who pays and why: copied onto the billing ledger's record for this call."""

    stage: str  # embedding | condense | expansion | compression | answer | rerank
    idempotency_key: str  # unique per provider call; a retried task reuses it, so it never counts twice
    user_id: int | None = None
    api_key_id: int | None = None
    assistant_id: int | None = None
    conversation_id: int | None = None
    message_id: int | None = None
    document_id: int | None = None
