"""A server-rendered SVG line chart of evaluation runs (no JavaScript, no CDN)."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import mark_safe

SERIES = (("ndcg_at_10", "nDCG@10", "#1e4fd8"), ("recall_at_k", "Recall@k", "#16a34a"), ("mrr", "MRR", "#b45309"))


def runs_chart(runs, *, width: int = 640, height: int = 220, title: str = "") -> str:
    """Runs oldest first; one polyline per metric over 0..1, with point titles for hover and screen readers.
    Only finished runs are plotted (queued, running and failed runs have no metrics)."""
    runs = [r for r in runs if getattr(r, "status", "done") == "done" and r.ndcg_at_10 is not None]
    if not runs:
        return ""
    left, right, top, bottom = 36, 12, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(runs)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, v)))

    parts = [f'<svg class="chart eval-chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">']
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    for i, run in enumerate(runs):
        if n <= 12 or i % max(1, n // 12) == 0 or i == n - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle">#{run.pk}</text>')
    for field, label, color in SERIES:
        points = [(x(i), y(getattr(r, field))) for i, r in enumerate(runs) if getattr(r, field) is not None]
        if len(points) > 1:
            coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>')
        for (px, py), run in zip(points, runs, strict=False):
            value = getattr(run, field)
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}">'
                         f"<title>#{run.pk} {escape(label)} {value:.3f}</title></circle>")
    parts.append("</svg>")
    legend = "".join(
        f'<span class="legend-item"><span class="swatch" style="background:{color}"></span>{escape(label)}</span>'
        for _field, label, color in SERIES
    )
    return mark_safe("".join(parts) + f'<p class="legend">{legend}</p>')
