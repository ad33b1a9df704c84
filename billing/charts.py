"""Server-rendered charts: plain SVG built here, styled by app.css, nothing loaded from the internet.

Text stays in HTML where it can (category charts are HTML rows with an SVG bar each), so Korean labels wrap
and scale like the rest of the page; the daily column chart carries a <title> per bar and a data table
next to it for screen readers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from billing.selectors import Metrics, Row

METRICS = ("cost", "tokens")


def metric_value(m: Metrics, metric: str) -> float:
    return float(m.cost) if metric == "cost" else float(m.total_tokens)


def format_usd(value: Decimal | float | int | None) -> str:
    value = Decimal(str(value or 0))
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) >= Decimal("0.01"):
        return f"${value:.4f}"
    text = f"{value:.6f}".rstrip("0")  # small model costs: up to 6 decimals, no trailing zeros past 4
    return f"${text}" if len(text.split(".")[1]) >= 4 else f"${value:.4f}"


def format_compact(value: float) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.0f}"


def format_metric(value: float, metric: str) -> str:
    return format_usd(value) if metric == "cost" else format_compact(value)


def format_axis(value: float, metric: str) -> str:
    """Tick labels: as short as exact ($0.0005, $1.5, 12.5, 12.5k)."""
    if metric != "cost":
        for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= size:
                return f"{value / size:.2f}".rstrip("0").rstrip(".") + suffix
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if value == 0:
        return "$0"
    return "$" + f"{Decimal(repr(round(value, 8))).normalize():f}"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above value (axis maximum)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value * 0.999999:
            return candidate
    return 10 ** (exponent + 1)


def column_chart(rows: list[Row], *, metric: str, title: str, chart_id: str) -> SafeString:
    """Columns per day, with a y axis and day labels. Each column has a tooltip title."""
    width, height = 760, 240
    left, right, top, bottom = 64, 8, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [metric_value(r.metrics, metric) for r in rows]
    peak = nice_ceiling(max(values, default=0))
    if metric != "cost":
        peak = max(peak, 4.0)  # whole tokens at every gridline, also for an empty period
    n = max(len(rows), 1)
    slot = plot_w / n
    bar_w = max(slot * 0.7, 1)
    parts = [
        format_html('<svg class="chart" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-t {}-d" '
                    'preserveAspectRatio="xMidYMid meet">', width, height, chart_id, chart_id),
        format_html('<title id="{}-t">{}</title>', chart_id, title),
        format_html('<desc id="{}-d">{}</desc>', chart_id, _("Highest: %(value)s. The table below lists every day.")
                    % {"value": format_metric(max(values, default=0), metric)}),
    ]
    for i in range(5):  # gridlines and y labels at 0, 25, 50, 75, 100 %
        y = top + plot_h - plot_h * i / 4
        parts.append(format_html('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>', left, width - right,
                                 _n(y), _n(y)))
        parts.append(format_html('<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>', left - 6,
                                 _n(y + 4), format_axis(peak * i / 4, metric)))
    label_every = max(1, math.ceil(n / 12))
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        x = left + slot * i + (slot - bar_w) / 2
        h = plot_h * value / peak if peak else 0
        tip = f"{row.label}: {format_metric(value, metric)}"
        if h > 0:
            parts.append(format_html(
                '<rect class="bar" x="{}" y="{}" width="{}" height="{}" rx="2"><title>{}</title></rect>',
                _n(x), _n(top + plot_h - max(h, 1)), _n(bar_w), _n(max(h, 1)), tip))
        if i % label_every == 0:
            parts.append(format_html('<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>',
                                     _n(x + bar_w / 2), height - 8, _short_day(row.key)))
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


def _n(value: float) -> str:
    return f"{value:.1f}"


def _short_day(key) -> str:
    return f"{key.month}/{key.day}" if hasattr(key, "month") else str(key)


@dataclass
class Bar:
    label: str
    value: float
    display: str
    percent: float  # of the largest bar, for the bar's width
    share: float  # of the total, for the text
    row: Row | None


def bar_rows(rows: list[Row], *, metric: str, limit: int = 8) -> list[Bar]:
    """The largest `limit` rows as bars; the rest folded into one "Other" bar."""
    ranked = sorted(rows, key=lambda r: -metric_value(r.metrics, metric))
    shown, rest = ranked[:limit], ranked[limit:]
    items = [(r.label, metric_value(r.metrics, metric), r) for r in shown]
    if rest:
        items.append((_("Other (%(count)s)") % {"count": len(rest)},
                      sum(metric_value(r.metrics, metric) for r in rest), None))
    peak = max((v for _l, v, _r in items), default=0) or 1
    total = sum(v for _l, v, _r in items) or 1
    return [Bar(label, value, format_metric(value, metric), round(100 * value / peak, 2),
                round(100 * value / total, 1), row) for label, value, row in items]
