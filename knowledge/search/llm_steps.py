"""Optional LLM steps of a search, through the LLM gateway: multi-query expansion and contextual compression.

Each step is off unless the KB turns it on, is billed through the gateway's usage context (stages
"expansion" / "compression"), and fails soft: when the gateway is missing, the model is down or its answer is
unusable, the search goes on without the step and records a warning.
"""

from __future__ import annotations

import logging
import re
import uuid

from django.conf import settings
from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)


class StepSkipped(Exception):
    """The step did not run; the message is the user-facing warning."""


def _target(configured: str) -> str:
    target = configured or getattr(settings, "SEARCH_LLM_MODEL", "")
    if not target:
        raise StepSkipped(_("No model is configured for this step; it was skipped."))
    return target


def _chat(*, tenant, target: str, stage: str, system: str, user: str, max_tokens: int, usage_extra: dict) -> str:
    try:
        from llm import gateway
        from llm.types import ChatRequest, GenerationParams, LLMError
    except ImportError as exc:
        raise StepSkipped(_("The LLM gateway is not available; the step was skipped.")) from exc
    from billing.types import UsageContext

    request = ChatRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        params=GenerationParams(temperature=0.0, max_tokens=max_tokens),
    )
    usage = UsageContext(stage=stage, idempotency_key=f"search:{stage}:{uuid.uuid4().hex}", **usage_extra)
    try:
        result = gateway.chat_sync(tenant=tenant, target=target, request=request, usage=usage)
    except LLMError as exc:
        raise StepSkipped(_("The model for this step is unavailable (%(error)s); the step was skipped.")
                          % {"error": exc.message}) from exc
    except Exception as exc:  # a broken provider must never break search
        logger.warning("search %s step failed: %r", stage, exc)
        raise StepSkipped(_("The model for this step failed; the step was skipped.")) from exc
    return result.text or ""


EXPANSION_SYSTEM = (
    "You help a search engine. Write {n} alternative search queries for the user's question: different wording, "
    "synonyms, and the question's language plus English if it is not English. One query per line, no numbering, "
    "no other text."
)


def expand_query(*, tenant, query: str, n: int, model: str, usage_extra: dict | None = None) -> list[str]:
    """Up to `n` alternative phrasings of `query` (never the query itself). Raises StepSkipped."""
    target = _target(model)
    text = _chat(tenant=tenant, target=target, stage="expansion", system=EXPANSION_SYSTEM.format(n=n), user=query,
                 max_tokens=60 * n, usage_extra=usage_extra or {})
    seen = {query.strip().lower()}
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip('"')
        if line and line.lower() not in seen and len(line) <= 500:
            seen.add(line.lower())
            out.append(line)
        if len(out) >= n:
            break
    if not out:
        raise StepSkipped(_("The expansion model gave no usable queries; searched with the question only."))
    return out


COMPRESSION_SYSTEM = (
    "Copy, word for word, only the sentences of the passage that help answer the question. If nothing helps, "
    "answer with NONE. No other text."
)


def compress(*, tenant, query: str, text: str, model: str, usage_extra: dict | None = None) -> str | None:
    """The passage's sentences relevant to `query` (verbatim), or None when nothing is. Raises StepSkipped."""
    target = _target(model)
    answer = _chat(tenant=tenant, target=target, stage="compression", system=COMPRESSION_SYSTEM,
                   user=f"Question: {query}\n\nPassage:\n{text}", max_tokens=max(64, len(text) // 2),
                   usage_extra=usage_extra or {}).strip()
    if not answer or answer.upper().startswith("NONE"):
        return None
    # Keep only sentences that really occur in the passage: the model must not add words to a citation.
    normalised = " ".join(text.split())
    kept = [s for s in re.split(r"(?<=[.!?。])\s+|\n+", answer) if s.strip() and " ".join(s.split()) in normalised]
    return " ".join(kept) if kept else text
