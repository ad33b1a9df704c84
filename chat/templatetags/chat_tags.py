from django import template
from django.utils.safestring import mark_safe

from chat.rendering import render_answer
from chat.serializers import citation_payload

register = template.Library()


@register.simple_tag
def answer_html(answer):
    """The answer's Markdown rendered and sanitised, with citation chips (safe to insert)."""
    return mark_safe(render_answer(answer.content, message_id=answer.pk, citations=answer.citations))  # noqa: S308


@register.simple_tag
def answer_citations(answer):
    return [citation_payload(c) for c in answer.citations or []]
