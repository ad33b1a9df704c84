from django import template
from django.utils.safestring import mark_safe

from chat.payloads import citation_payload, source_payloads
from chat.rendering import render_answer

register = template.Library()


@register.simple_tag
def answer_html(answer):
    """The answer's Markdown rendered and sanitised, with citation chips (safe to insert)."""
    return mark_safe(render_answer(answer.content, message_id=answer.pk, citations=answer.citations))  # noqa: S308


@register.simple_tag
def answer_citations(answer):
    return [citation_payload(c) for c in answer.citations or []]


@register.simple_tag
def answer_sources(answer):
    """Every chunk the answer was given, the cited ones first (each in [n] order), with `cited` and `url`."""
    sources = source_payloads(answer)
    return [s for s in sources if s["cited"]] + [s for s in sources if not s["cited"]]
