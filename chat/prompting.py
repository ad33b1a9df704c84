"""Turning an assistant, a conversation and retrieved chunks into model messages, within a token budget.

Documents travel as data: they sit inside a <documents> block of the user turn, never in the system prompt,
and any tag inside a document that could close or reopen that block is defused first. The system prompt
tells the model the block holds reference data, not instructions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from chat import defaults
from chat.tokens import MESSAGE_OVERHEAD, count_message_tokens, count_tokens, truncate_to_tokens

_BLOCK_TAGS = re.compile(r"<\s*/?\s*(documents?|system|instructions?)\b", re.I)


@dataclass
class Turn:
    question: str
    answer: str


def defuse(text: str) -> str:
    """Make tags that could break out of the documents block inert (shown as ‹/document›)."""
    return _BLOCK_TAGS.sub(lambda m: "‹" + m.group(0)[1:], text).replace("\x00", "")


def _attr(value) -> str:
    return str(value).replace('"', "'").replace("<", "‹").replace(">", "›").replace("\n", " ")[:200]


def render_document(n: int, hit, text: str | None = None) -> str:
    attrs = f'index="{n}" title="{_attr(hit.document_title)}"'
    if hit.page:
        attrs += f' page="{hit.page}"'
    if hit.heading_path:
        attrs += f' section="{_attr(hit.heading_path)}"'
    return f"<document {attrs}>\n{defuse(text if text is not None else prompt_text(hit)).strip()}\n</document>"


def prompt_text(hit) -> str:
    """What the model reads for a hit: its compressed sentences, or the chunk with its neighbours, or the chunk."""
    compressed = getattr(hit, "compressed_text", None)
    if compressed is not None:
        return compressed
    return getattr(hit, "context_text", "") or hit.text


def render_documents(blocks: list[str]) -> str:
    return "<documents>\n" + "\n".join(blocks) + "\n</documents>"


def system_message(assistant) -> str:
    prompt = (assistant.system_prompt or defaults.DEFAULT_SYSTEM_PROMPT).strip()
    if assistant.json_schema:
        prompt += ("\n\nReply with one JSON object that follows this JSON schema, and nothing else:\n"
                   + json.dumps(assistant.json_schema, ensure_ascii=False))
    return prompt


def few_shot_messages(assistant) -> list[dict[str, str]]:
    messages = []
    for pair in assistant.few_shot or []:
        if pair.get("user") and pair.get("assistant"):
            messages += [{"role": "user", "content": pair["user"]}, {"role": "assistant", "content": pair["assistant"]}]
    return messages


def question_message(question: str, document_blocks: list[str]) -> str:
    if not document_blocks:
        return f"<documents>\n</documents>\n\nQuestion: {question}"
    return f"{render_documents(document_blocks)}\n\nQuestion: {question}"


@dataclass
class BuiltPrompt:
    messages: list[dict[str, str]]
    context_hits: list  # the hits numbered [1..n] in the prompt, in order
    prompt_tokens: int


def build_answer_prompt(*, assistant, history: list[Turn], question: str, hits: list) -> BuiltPrompt:
    """System prompt, examples, as much recent history and as many hits (in rank order) as the window holds.

    Budget: context_window - max_tokens - fixed parts; history gets at most a quarter of what is left, the
    documents the rest. A first hit too long on its own is truncated rather than dropped.
    """
    system = system_message(assistant)
    fixed = [{"role": "system", "content": system}, *few_shot_messages(assistant)]
    available = assistant.context_window - assistant.max_tokens - count_message_tokens(fixed)
    available -= count_tokens(question) + MESSAGE_OVERHEAD + 40  # the question turn's own wrapping
    history_messages: list[dict[str, str]] = []
    history_budget = max(0, available // 4)
    for turn in reversed(history):
        pair = [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.answer}]
        cost = count_message_tokens(pair)
        if cost > history_budget:
            break
        history_messages = pair + history_messages
        history_budget -= cost
    available -= count_message_tokens(history_messages) if history_messages else 0
    blocks: list[str] = []
    kept = []
    for hit in hits:
        n = len(kept) + 1
        block = render_document(n, hit)
        cost = count_tokens(block) + 1
        if cost > available:
            if kept or available < 64:
                break
            block = render_document(n, hit, truncate_to_tokens(prompt_text(hit), available - 40))
            cost = count_tokens(block) + 1
        blocks.append(block)
        kept.append(hit)
        available -= cost
    messages = [*fixed, *history_messages, {"role": "user", "content": question_message(question, blocks)}]
    return BuiltPrompt(messages=messages, context_hits=kept, prompt_tokens=count_message_tokens(messages))


def build_condense_messages(*, history: list[Turn], question: str) -> list[dict[str, str]]:
    lines = []
    for turn in history[-defaults.HISTORY_TURNS:]:
        lines.append(f"User: {truncate_to_tokens(turn.question, 300)}")
        lines.append(f"Assistant: {truncate_to_tokens(turn.answer, 300)}")
    conversation = "\n".join(lines)
    return [
        {"role": "system", "content": defaults.CONDENSE_PROMPT},
        {"role": "user", "content": f"Conversation:\n{conversation}\n\nLast question: {question}\n\nStandalone question:"},
    ]


def clean_condensed(output: str, fallback: str) -> str:
    """The model's rewrite, or the original question when the rewrite is empty or rambles."""
    lines = [line.strip() for line in (output or "").strip().splitlines() if line.strip()]
    text = lines[0].strip('"“”\'').strip() if lines else ""
    for prefix in ("Standalone question:", "Question:", "독립된 질문:", "질문:"):
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix):].strip().strip('"“”\'').strip()
    if not text or len(text) > max(400, 4 * len(fallback)):
        return fallback
    return text


_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def cited_numbers(text: str) -> list[int]:
    """[n] numbers in order of first appearance ([1, 2] and [1][2] both count)."""
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        for part in match.group(1).split(","):
            n = int(part)
            if n not in seen:
                seen.append(n)
    return seen


def snippet(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"
