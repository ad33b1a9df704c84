"""The knowledge base page's document list: paginated, tolerant of odd page numbers, usable on a phone."""

import pytest

from tests.factories.knowledge import make_document, make_kb

pytestmark = pytest.mark.django_db


@pytest.fixture
def long_kb(tenant_a):
    kb = make_kb(tenant_a.tenant, name="Long")
    for i in range(55):
        make_document(tenant_a.tenant, kb, name=f"doc-{i:03d}.txt", data=f"document number {i}")
    return kb


def test_long_document_lists_are_paginated(client_a, long_kb):
    """The KB page showed at most 500 documents, silently, and rendered them all at once."""
    first = client_a.get(f"/knowledge/{long_kb.pk}/")
    titles = [d.title for d in first.context["documents"]]
    assert len(titles) == 50 and titles[0] == "doc-054.txt"
    body = first.content.decode()
    assert "?page=2" in body and "Documents: 55" in body
    second = client_a.get(f"/knowledge/{long_kb.pk}/?page=2")
    assert [d.title for d in second.context["documents"]] == [f"doc-{i:03d}.txt" for i in range(4, -1, -1)]
    # the live table polls the page it shows
    assert f'hx-get="/knowledge/{long_kb.pk}/documents/?page=2"' in second.content.decode()
    partial = client_a.get(f"/knowledge/{long_kb.pk}/documents/?page=2")
    assert len(partial.context["documents"]) == 5


@pytest.mark.parametrize("page", ["abc", "0", "-1", "99999999999999999999", "%FF"])
def test_odd_page_numbers_show_a_page_not_an_error(client_a, long_kb, page):
    response = client_a.get(f"/knowledge/{long_kb.pk}/?page={page}")
    assert response.status_code == 200 and len(response.context["documents"]) in (50, 5)


def test_document_actions_stay_visible_on_a_phone(client_a, tenant_a):
    kb = make_kb(tenant_a.tenant, name="Phone")
    make_document(tenant_a.tenant, kb, name="a.txt", data="hello")
    body = client_a.get(f"/knowledge/{kb.pk}/").content.decode()
    assert '<td class="actions keep">' in body
