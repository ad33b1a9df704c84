"""Fixes from the QA review of ingestion (issue 4): each test failed before its fix."""

import pytest
from django.core.exceptions import ValidationError

from knowledge import services
from tests.factories.knowledge import make_document, make_kb

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", [[1, 2], "hybrid", 5])
def test_retrieval_settings_must_be_an_object(api_a, value):
    """A list or string stored as `retrieval` later broke every search of the KB (settings_for calls .items())."""
    created = api_a.post("/api/v1/knowledge-bases", {"name": "R", "retrieval": value}, format="json")
    assert created.status_code == 400 and "retrieval" in created.json()["error"]["fields"]
    kb_id = api_a.post("/api/v1/knowledge-bases", {"name": "R"}, format="json").json()["id"]
    patched = api_a.patch(f"/api/v1/knowledge-bases/{kb_id}", {"retrieval": value}, format="json")
    assert patched.status_code == 400 and "retrieval" in patched.json()["error"]["fields"]
    assert api_a.get(f"/api/v1/knowledge-bases/{kb_id}").json()["retrieval"] == {}


def test_kb_services_refuse_non_object_retrieval(tenant_a):
    with pytest.raises(ValidationError):
        make_kb(tenant_a.tenant, name="bad", retrieval=["x"])
    kb = make_kb(tenant_a.tenant, name="good", retrieval={"mode": "bm25"})
    with pytest.raises(ValidationError):
        services.kb_update(tenant=tenant_a.tenant, kb=kb, retrieval="bm25")


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
