"""The usage page's SVG charts."""

import re
from datetime import date

import pytest

from billing import charts
from billing.selectors import Metrics, Row


def _axis_labels(svg: str) -> list[str]:
    return re.findall(r'<text class="axis" x="58" y="[\d.]+" text-anchor="end">([^<]*)</text>', svg)


@pytest.mark.parametrize("values", [[0, 0, 0], [1, 2, 0], [50, 3]])
def test_token_axis_labels_are_distinct_and_exact(values):
    """An empty month's chart read 0, 0, 0, 1, 1 up the axis (quarters of 1 rounded to whole tokens)."""
    rows = [Row(date(2026, 1, i + 1), str(i), Metrics(input_tokens=v)) for i, v in enumerate(values)]
    labels = _axis_labels(str(charts.column_chart(rows, metric="tokens", title="t", chart_id="c")))
    assert len(labels) == 5 and len(set(labels)) == 5, labels
    top = float(labels[-1])
    assert [float(label) for label in labels] == [top * i / 4 for i in range(5)], labels  # exact, not rounded
