"""Answers are Markdown written by a model fed with user documents: render it, then sanitise it.

markdown-it-py renders (raw HTML in the source is escaped, not passed through), nh3 removes anything outside a
small allow-list (no scripts, no event handlers, no javascript: links), and only then do [n] markers become
citation chips: our own markup, added after sanitising, for numbers that map to a real citation.
"""

from __future__ import annotations

import re
from functools import cache

import nh3
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "span",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "th": {"align"}, "td": {"align"}, "ol": {"start"}}
_TAG_OR_TEXT = re.compile(r"(<[^>]+>)")
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


@cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
        ["table", "strikethrough"]
    )


def sanitize_markdown(text: str) -> str:
    html = _markdown().render(text or "")
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     link_rel="noopener noreferrer nofollow")


def _chip(message_id: int, n: int) -> str:
    return (f'<button type="button" class="cite-chip" data-cite="{n}" aria-controls="src-{message_id}-{n}" '
            f'aria-label="Source {n}">{n}</button>')


def link_citations(html: str, *, message_id: int, numbers: set[int]) -> str:
    """Turn [n] in text (not inside code) into chips, for cited numbers only."""
    out = []
    in_code = 0
    for part in _TAG_OR_TEXT.split(html):
        if part.startswith("<"):
            name = part[1:].split()[0].rstrip(">").lower() if len(part) > 2 else ""
            if name in ("code", "pre"):
                in_code += 1
            elif name in ("/code", "/pre"):
                in_code = max(0, in_code - 1)
            out.append(part)
        elif in_code or not numbers:
            out.append(part)
        else:
            def replace(match):
                ns = [int(x) for x in match.group(1).split(",")]
                if not all(n in numbers for n in ns):
                    return match.group(0)
                return "".join(_chip(message_id, n) for n in ns)

            out.append(_CITATION.sub(replace, part))
    return "".join(out)


def render_answer(text: str, *, message_id: int, citations: list[dict] | None = None) -> str:
    html = sanitize_markdown(text)
    numbers = {c["n"] for c in citations or []}
    return link_citations(html, message_id=message_id, numbers=numbers) if numbers else html


def step_label(step: dict) -> str:
    """What the pending answer bubble says for one of the worker's progress steps ("" for an unknown one)."""
    name = step.get("step")
    if name == "searching":
        return _("Searching…")
    if name == "sources":
        count = int(step.get("count") or 0)
        if count <= 0:
            return _("No relevant sources found")
        return ngettext("%(n)s source found", "%(n)s sources found", count) % {"n": count}
    if name == "writing":
        return _("Quoting the documents…") if step.get("mode") == "extractive" else _("Writing…")
    return ""
