"""Optional LLM steps of a search, through the LLM gateway: multi-query expansion, translation of a question
into the KB's language, and contextual compression.

Expansion and compression are off unless the KB turns them on; translation runs whenever a model is configured
and the question's language is not the passages' (it adds one query variant that BM25 can match). Each step is billed to the search's payer (stages "expansion" /
"compression"), and fails soft: when the model is down or its answer is unusable, the search goes on without
the step and records a warning. A usage limit is not a failure of the step: QuotaExceeded reaches the caller.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.utils.translation import gettext as _

from billing.types import UsageContext
from knowledge.search.language import query_language
from llm import gateway
from llm.types import ChatRequest, GenerationParams, LLMError


class StepSkipped(Exception):
    """The step did not run; the message is the user-facing warning."""


def _target(configured: str) -> str:
    target = configured or settings.SEARCH_LLM_MODEL
    if not target:
        raise StepSkipped(_("No model is configured for this step; it was skipped."))
    return target


def _chat(*, tenant, target: str, system: str, user: str, max_tokens: int, usage: UsageContext) -> str:
    request = ChatRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        params=GenerationParams(temperature=0.0, max_tokens=max_tokens),
    )
    try:
        result = gateway.chat_sync(tenant=tenant, target=target, request=request, usage=usage)
    except LLMError as exc:  # the gateway's every model failure; QuotaExceeded is the caller's to answer
        raise StepSkipped(_("The model for this step is unavailable (%(error)s); the step was skipped.")
                          % {"error": exc.message}) from exc
    return result.text or ""


EXPANSION_SYSTEM = (
    "You help a search engine. Write {n} alternative search queries for the user's question: different wording, "
    "synonyms, and the question's language plus English if it is not English. One query per line, no numbering, "
    "no other text."
)


def expand_query(*, tenant, query: str, n: int, model: str, usage: UsageContext) -> list[str]:
    """Up to `n` alternative phrasings of `query` (never the query itself). Raises StepSkipped."""
    target = _target(model)
    text = _chat(tenant=tenant, target=target, system=EXPANSION_SYSTEM.format(n=n), user=query,
                 max_tokens=60 * n, usage=usage)
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


LANGUAGE_NAMES = {"ko": "Korean", "en": "English"}
TRANSLATION_SYSTEM = (
    "Translate the user's search query into {language}. Keep names, numbers and codes as they are. Answer with "
    "the translated query only, on one line, no quotes or notes."
)


def configured_model(model: str) -> str:
    """The model a step would use ("" when none is configured): the KB's, else SEARCH_LLM_MODEL."""
    return model or settings.SEARCH_LLM_MODEL


def translate_query(*, tenant, query: str, language: str, model: str, usage: UsageContext) -> str:
    """`query` in `language` ("ko" or "en"). Raises StepSkipped when the model is down or answers with
    something that is not a translation."""
    target = _target(model)
    text = _chat(tenant=tenant, target=target, system=TRANSLATION_SYSTEM.format(language=LANGUAGE_NAMES[language]),
                 user=query, max_tokens=200, usage=usage)
    line = next((ln.strip().strip('"') for ln in text.splitlines() if ln.strip()), "")
    if not line or len(line) > 500 or line.lower() == query.strip().lower() or query_language(line) != language:
        raise StepSkipped(_("The translation model gave no usable translation; searched with the question only."))
    return line


COMPRESSION_SYSTEM = (
    "Copy, word for word, only the sentences of the passage that help answer the question. If nothing helps, "
    "answer with NONE. No other text."
)


def compress(*, tenant, query: str, text: str, model: str, usage: UsageContext) -> str | None:
    """The passage's sentences relevant to `query` (verbatim), or None when nothing is. Raises StepSkipped."""
    target = _target(model)
    answer = _chat(tenant=tenant, target=target, system=COMPRESSION_SYSTEM,
                   user=f"Question: {query}\n\nPassage:\n{text}", max_tokens=max(64, len(text) // 2),
                   usage=usage).strip()
    if not answer or answer.upper().startswith("NONE"):
        return None
    # Keep only sentences that really occur in the passage: the model must not add words to a citation.
    normalised = " ".join(text.split())
    kept = [s for s in re.split(r"(?<=[.!?。])\s+|\n+", answer) if s.strip() and " ".join(s.split()) in normalised]
    return " ".join(kept) if kept else text
