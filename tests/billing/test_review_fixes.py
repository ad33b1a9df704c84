"""Fixes from the QA review of billing (issue 7): each test failed before its fix."""

import re
from datetime import date

import pytest

from billing import charts
from billing.selectors import Metrics, Row
from tests.conftest import web_client

pytestmark = pytest.mark.django_db


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


def test_usage_is_not_offered_to_members_who_cannot_open_it(tenant_a):
    member = web_client(tenant_a.member, tenant_a.tenant)
    assert member.get("/usage/").status_code == 403
    home = member.get("/").content.decode()
    assert 'href="/usage/"' not in home
    assert 'href="/usage/"' in web_client(tenant_a.admin, tenant_a.tenant).get("/").content.decode()


def test_refused_page_keeps_the_app_layout(tenant_a):
    """A member who follows an old link to /usage/ gets a page with the navigation, not a bare "403 Forbidden"."""
    response = web_client(tenant_a.member, tenant_a.tenant).get("/usage/")
    body = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in body and "admin" in body.lower()


def test_missing_page_keeps_the_app_layout(client_a):
    response = client_a.get("/knowledge/987654/")
    assert response.status_code == 404 and 'class="topbar"' in response.content.decode()
