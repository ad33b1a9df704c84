from decimal import Decimal, InvalidOperation

from django import template

from billing import charts
from billing.selectors import MessageUsage, usage_for_message

register = template.Library()


@register.filter
def usd(value):
    """$1,234.56 / $0.0123 / $0.000195: enough digits to see small model costs."""
    return charts.format_usd(value)


@register.filter
def compact(value):
    """12.3k, 4.5M: short token counts for tight spots (full numbers go in tables)."""
    try:
        return charts.format_compact(float(value))
    except (TypeError, ValueError):
        return value


@register.inclusion_tag("billing/_message_usage.html", takes_context=True)
def message_usage(context, message_or_usage):
    """One answer's tokens and cost by stage:  {% load billing_tags %}{% message_usage message.pk %}
    Pass a MessageUsage (from billing.selectors.usage_for_messages, one query for a whole conversation) or a
    message id (one query each). Renders nothing for an answer without usage."""
    usage = message_or_usage
    if not isinstance(usage, MessageUsage):
        tenant = context.get("tenant") or getattr(context.get("request"), "tenant", None)
        usage = usage_for_message(tenant=tenant, message_id=int(message_or_usage)) if tenant else None
    return {"usage": usage}


@register.filter
def rate(value):
    """A price per 1M tokens as published: $0.15, $0.075, $2.50, $120.00."""
    try:
        text = f"{Decimal(value).normalize():f}"
    except (TypeError, ValueError, InvalidOperation):
        return value
    whole, _dot, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


@register.filter
def num(value):
    """1,234,567: grouped digits (the same in English and Korean), cheaper than humanize's intcomma."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value
