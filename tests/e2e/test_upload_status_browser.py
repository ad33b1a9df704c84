"""The upload box follows each uploaded document's state in a real browser: once the document is indexed (or
fails), the file's row says so, with the reason or the reading warning, instead of the upload-time message."""

from __future__ import annotations

import pytest

from accounts.tenancy import tenant_scope
from knowledge import services
from knowledge.models import Document
from tests.chat.live import asgi_server, backend_pids, close_new_connections
from tests.factories.knowledge import make_kb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.integration]

PASSWORD = "pw-for-tests-123"  # tests.factories.accounts.UserFactory
# Passes the upload sniff (text in the first 64 KB), fails in the worker (binary after that).
FAILING = b"plain words " * 6000 + bytes(range(256)) * 64
# Damaged UTF-8: read, with a warning about the characters left out.
DAMAGED = "# 안내\n\n".encode() + "검색 증강".encode()[:-1] + " 생성은 문서에서 답을 찾습니다.\n".encode()


def upload_row(page, name: str):
    return page.locator("#upload-list li", has=page.locator(".upload-name", has_text=name))


def test_upload_rows_follow_the_documents_state(browser, tenant_a, tmp_path):
    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        kb = make_kb(tenant, name="Handbook")
    (tmp_path / "broken.txt").write_bytes(FAILING)
    (tmp_path / "damaged.md").write_bytes(DAMAGED)
    before = backend_pids()
    try:
        with asgi_server() as url:
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/accounts/login/")
            page.fill("input[name=username]", tenant_a.owner.email)
            page.fill("input[name=password]", PASSWORD)
            page.click("main form button")
            page.wait_for_url(f"{url}/")

            page.goto(f"{url}/knowledge/{kb.pk}/")
            page.set_input_files("#file-input", [str(tmp_path / "broken.txt"), str(tmp_path / "damaged.md")])
            page.wait_for_selector("#upload-list li[data-status=queued] >> nth=1")  # both rows follow the table
            assert "Queued" in upload_row(page, "broken.txt").inner_text()

            # The worker's part, done here: one document fails, the other is read with a warning.
            with tenant_scope(tenant):
                ids = dict(Document.objects.filter(kb=kb).values_list("filename", "pk"))
            for document_id in ids.values():
                services.document_process(tenant=tenant, document_id=document_id)

            page.wait_for_selector("#upload-list li[data-status=failed]")
            page.wait_for_selector("#upload-list li[data-status=ready]")
            failed, ready = upload_row(page, "broken.txt"), upload_row(page, "damaged.md")
            assert "Failed" in failed.inner_text() and "binary data" in failed.inner_text()
            assert "failed" in failed.get_attribute("class")
            assert "Ready" in ready.inner_text() and "could not be decoded" in ready.inner_text()
            for row in (failed, ready):
                assert "Queued" not in row.inner_text() and "Uploaded" not in row.inner_text()
            assert errors == []
            page.close()
    finally:
        close_new_connections(before)
