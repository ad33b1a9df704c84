"""The document page lists the document's chunks: each one's full text (expandable) with its heading path."""

import re

import pytest
from django.utils.html import escape

from accounts.tenancy import tenant_scope
from knowledge import services
from knowledge.models import Chunk
from tests.conftest import web_client
from tests.factories.knowledge import make_document, make_kb

SENTENCE = "Rotate the signing keys every ninety days and keep the previous key for one more day."


@pytest.fixture
def kb(tenant_a):
    return make_kb(tenant_a.tenant, name="Handbook")


def _chunk_numbers(page: str) -> list[int]:
    return [int(n) for n in re.findall(r"<summary>\s*<span[^>]*>#(\d+)", page)]


def _document_with_chunks(tenant, kb, count: int):
    document = make_document(tenant, kb, name="many.txt")
    with tenant_scope(tenant):
        Chunk.objects.bulk_create([
            Chunk(tenant=tenant, kb=kb, document=document, ordinal=i, text=f"chunk body {i}", char_start=i,
                  char_end=i + 1)
            for i in range(count)
        ])
    return document


def test_each_chunk_shows_its_full_text_and_heading_path(client_a, tenant_a, kb):
    body = " ".join([SENTENCE] * 7) + " The last words of this chunk."  # ~650 characters
    data = f"# Security guide\n\n## Keys\n\n{body}\n\n## Audit\n\n{' '.join([SENTENCE] * 5)}\n"
    document = services.document_process(
        tenant=tenant_a.tenant, document_id=make_document(tenant_a.tenant, kb, name="guide.md", data=data).pk)
    page = client_a.get(f"/knowledge/documents/{document.pk}/").content.decode()
    with tenant_scope(tenant_a.tenant):
        chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    keys = next(c for c in chunks if "The last words of this chunk." in c.text)
    assert keys.heading_path == "Security guide > Keys" and len(keys.text) > 600
    # The whole text, not a preview, inside an expandable element, under its heading path.
    blocks = re.findall(r"<details class=\"card chunk\">(.*?)</details>", page, re.S)
    assert len(blocks) == len(chunks)
    block = next(b for b in blocks if "The last words of this chunk." in b)
    assert f'<pre class="chunk-text">{escape(keys.text)}</pre>' in block
    assert f'<span class="chunk-path">{escape("Security guide > Keys")}</span>' in block
    # The strict CSP allows no inline style or script: the view uses neither.
    assert " style=" not in page and "<script>" not in page


def test_chunks_are_listed_a_page_at_a_time(client_a, tenant_a, kb):
    document = _document_with_chunks(tenant_a.tenant, kb, 120)
    url = f"/knowledge/documents/{document.pk}/"
    first = client_a.get(url).content.decode()
    assert _chunk_numbers(first) == list(range(50))
    assert "120 chunks" in first and 'href="?page=2#chunks"' in first
    last = client_a.get(url + "?page=3").content.decode()
    assert _chunk_numbers(last) == list(range(100, 120))
    assert "chunk body 119" in last and 'href="?page=2#chunks"' in last
    assert _chunk_numbers(client_a.get(url + "?page=99").content.decode()) == list(range(100, 120))
    assert _chunk_numbers(client_a.get(url + "?page=x").content.decode()) == list(range(50))


def test_chunks_of_another_tenants_document_are_not_found(client_b, tenant_a, kb):
    document = _document_with_chunks(tenant_a.tenant, kb, 60)
    for query in ("", "?page=2"):
        response = client_b.get(f"/knowledge/documents/{document.pk}/{query}")
        assert response.status_code == 404
        assert "chunk body" not in response.content.decode()


def test_members_read_the_chunks_too(tenant_a, kb):
    document = _document_with_chunks(tenant_a.tenant, kb, 3)
    page = web_client(tenant_a.member, tenant_a.tenant).get(f"/knowledge/documents/{document.pk}/")
    assert page.status_code == 200 and _chunk_numbers(page.content.decode()) == [0, 1, 2]
