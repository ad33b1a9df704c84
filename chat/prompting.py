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
from chat.tokens import (
    BUDGET_MESSAGE_OVERHEAD,
    budget_message_tokens,
    budget_tokens,
    truncate_to_budget,
    truncate_to_tokens,
)

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
    prompt_tokens: int  # the prompt's size by the packing budget (an upper estimate, chat.tokens.budget_tokens)
    dropped_hits: int = 0  # hits that did not fit (lowest-ranked first): "context had to be cut"
    context_window: int = 0  # the window packed for: min(assistant's setting, the model's real window)
    max_tokens: int = 0  # room kept for the answer; send at most this as max_tokens
    dropped_examples: int = 0  # few-shot examples left out so that documents still fit


MIN_DOCUMENT_BUDGET = 256  # few-shot examples give way before the documents shrink below this
QUESTION_WRAPPING = 40  # the <documents> block and "Question:" around the question


def effective_window(*, assistant, context_window: int | None = None) -> int:
    """The assistant's setting, lowered (never raised) to the model's real window when known."""
    window = int(assistant.context_window)
    if context_window:
        window = min(window, int(context_window))
    return window


def build_answer_prompt(*, assistant, history: list[Turn], question: str, hits: list,
                        context_window: int | None = None) -> BuiltPrompt:
    """System prompt, examples, as much recent history and as many hits (in rank order) as the window holds.

    The window is min(assistant.context_window, context_window) (the model's real window, see
    llm.selectors.model_context_window). Everything is counted with budget_tokens, which allows for model
    tokenizers that count more than cl100k (about 2x for Korean on small models), so prompt + max_tokens fits.
    Budget: window - answer room - fixed parts; history gets at most a quarter of what is left, the documents the
    rest. The answer's room is max_tokens, at most half the window. Few-shot examples are dropped (last first)
    when they would leave the documents less than MIN_DOCUMENT_BUDGET; hits that do not fit are dropped from
    the lowest rank up (`dropped_hits`); a first hit too long on its own is truncated rather than dropped.
    """
    window = effective_window(assistant=assistant, context_window=context_window)
    reserve = max(1, min(int(assistant.max_tokens), window // 2))
    system = {"role": "system", "content": system_message(assistant)}
    examples = few_shot_messages(assistant)
    question_cost = budget_tokens(question) + BUDGET_MESSAGE_OVERHEAD + QUESTION_WRAPPING
    dropped_examples = 0
    while True:
        available = window - reserve - budget_message_tokens([system, *examples]) - question_cost
        if available >= MIN_DOCUMENT_BUDGET or not examples:
            break
        examples = examples[:-2]
        dropped_examples += 1
    history_messages: list[dict[str, str]] = []
    history_budget = max(0, available // 4)
    for turn in reversed(history):
        pair = [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.answer}]
        cost = budget_message_tokens(pair) - 3
        if cost > history_budget:
            break
        history_messages = pair + history_messages
        history_budget -= cost
    available -= budget_message_tokens(history_messages) - 3 if history_messages else 0
    blocks: list[str] = []
    kept = []
    for hit in hits:
        n = len(kept) + 1
        block = render_document(n, hit)
        cost = budget_tokens(block) + 1
        if cost > available:
            if kept or available < 64:
                break
            wrapper = budget_tokens(render_document(n, hit, "")) + 8
            block = render_document(n, hit, truncate_to_budget(prompt_text(hit), available - wrapper))
            cost = budget_tokens(block) + 1
        blocks.append(block)
        kept.append(hit)
        available -= cost
    messages = [system, *examples, *history_messages, {"role": "user", "content": question_message(question, blocks)}]
    return BuiltPrompt(messages=messages, context_hits=kept, prompt_tokens=budget_message_tokens(messages),
                       dropped_hits=len(hits) - len(kept), context_window=window, max_tokens=reserve,
                       dropped_examples=dropped_examples)


def overflow_retry_window(*, built: BuiltPrompt, error) -> int:
    """The window to rebuild with after a provider refused `built` as too long (llm.types.ContextOverflow).

    Shrink once: to the provider's real window when it said one, scaled by how much more its tokenizer counted
    than our budget when it said that; else by a quarter. Rebuild with build_answer_prompt(...,
    context_window=<this>) and ask again; a second refusal is the answer's error.
    """
    window = built.context_window
    real = getattr(error, "context_window", None)
    if real and real < window:
        window = real
    room = window - built.max_tokens
    counted = getattr(error, "prompt_tokens", None)
    if counted and built.prompt_tokens and counted > built.prompt_tokens:
        room = room * built.prompt_tokens / counted * 0.9
    elif not real or real >= built.context_window:
        room = room * 0.75  # nothing to go by: the margin was too small by an unknown amount
    return max(built.max_tokens + 1, int(built.max_tokens + room))


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
