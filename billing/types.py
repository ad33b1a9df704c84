"""What a model call used and on whose behalf: produced by the LLM gateway, consumed by the usage ledger.
Lives in billing because billing sits below llm in the dependency order.

Token semantics (OpenAI's): `input_tokens` is the WHOLE prompt, cached tokens included;
`cached_input_tokens` is the part of it the provider served from its prompt cache (billed at the cached rate).
Ollama reports no cache, so there `cached_input_tokens` stays 0.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any


class Stage:
    EMBEDDING = "embedding"
    CONDENSE = "condense"
    EXPANSION = "expansion"
    COMPRESSION = "compression"
    ANSWER = "answer"
    RERANK = "rerank"
    EXTRACTIVE = "extractive"  # an answer quoted from the documents: no model call, recorded at zero cost

    ALL = (EMBEDDING, CONDENSE, EXPANSION, COMPRESSION, ANSWER, RERANK, EXTRACTIVE)
    # The payer handed to a search: never on the ledger itself, each of the search's calls is recorded under its
    # own stage (UsageContext.for_call).
    SEARCH = "search"


@dataclass
class Usage:
    input_tokens: int = 0  # the whole prompt, cached tokens included
    cached_input_tokens: int = 0  # part of input_tokens read from the provider's prompt cache
    output_tokens: int = 0
    estimated: bool = False  # True when the provider reported nothing and we counted offline

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class UsageContext:
    """Who pays and why: copied onto the billing ledger's record for this call."""

    stage: str  # embedding | condense | expansion | compression | answer | rerank | extractive
    idempotency_key: str  # unique per provider call; a retried task reuses it, so it never counts twice
    user_id: int | None = None
    api_key_id: int | None = None
    assistant_id: int | None = None
    conversation_id: int | None = None
    message_id: int | None = None
    document_id: int | None = None

    def for_call(self, *parts, stage: str | None = None) -> UsageContext:
        """The same payer for one of several calls made on its behalf (a search's expansion, each query's
        embedding, each batch of a long document): a key derived from this one by `parts`, so a retried task
        derives the same keys and is never billed twice, and that call's `stage` when it differs."""
        key = ":".join([self.idempotency_key, *map(str, parts)])
        return replace(self, stage=stage or self.stage, idempotency_key=key)


@dataclass
class Reservation:
    """What quota_reserve set aside for one call; hand it back to usage_record or quota_release.

    `id` is None when nothing had to be enforced for the tenant (no hard cap, rate limit or key/user cap):
    then settling only adds the actual usage. Settling or releasing the same reservation twice is harmless.
    """

    tenant: Any = None
    tokens: int = 0  # prompt estimate + max output tokens
    cost: Decimal = Decimal(0)  # those tokens at the model's current price
    id: uuid.UUID | None = None
    period_start: date | None = None
    window_start: datetime | None = None
    api_key_id: int | None = None
    user_id: int | None = None
    subjects: tuple[str, ...] = field(default_factory=tuple)  # counters charged: "tenant", "api_key", "user"
    limits: Any = field(default=None, repr=False, compare=False)  # billing-internal: the limits applied

    @property
    def amount(self) -> int:  # the stub's name, kept for callers written against it
        return self.tokens
