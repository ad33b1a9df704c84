import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.tenancy import tenant_scope
from knowledge import services
from knowledge.models import Document, KnowledgeBase
from tests.conftest import web_client
from tests.factories.knowledge import make_document, make_kb

JSON = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}  # what the page's script sends


@pytest.fixture
def kb(tenant_a):
    return make_kb(tenant_a.tenant, name="Web KB", description="설명")


def test_list_and_create(client_a, tenant_a):
    page = client_a.get("/knowledge/")
    assert page.status_code == 200 and "New knowledge base" in page.content.decode()
    form = client_a.get("/knowledge/new/")
    assert "use-multilingual" in form.content.decode()
    response = client_a.post("/knowledge/new/", {
        "name": "사내 규정", "description": "", "language": "ko", "embedding_model": "use-multilingual",
        "chunk_size": 900, "chunk_overlap": 120,
    })
    with tenant_scope(tenant_a.tenant):
        kb = KnowledgeBase.objects.get(name="사내 규정")
    assert response.status_code == 302 and response["Location"] == f"/knowledge/{kb.pk}/"
    assert "사내 규정" in client_a.get("/knowledge/").content.decode()


def test_create_validation_errors_are_shown(client_a, kb):
    response = client_a.post("/knowledge/new/", {
        "name": "web kb", "language": "auto", "embedding_model": "use-multilingual",
        "chunk_size": 900, "chunk_overlap": 800,
    })
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()


def test_member_can_read_but_not_change(tenant_a, kb):
    member = web_client(tenant_a.member, tenant_a.tenant)
    page = member.get(f"/knowledge/{kb.pk}/")
    assert page.status_code == 200
    assert "dropzone" not in page.content.decode()
    assert member.get("/knowledge/new/").status_code == 403
    response = member.post(f"/knowledge/{kb.pk}/upload/", {"file": SimpleUploadedFile("a.txt", b"hi")})
    assert response.status_code == 403
    assert member.post(f"/knowledge/{kb.pk}/delete/").status_code == 403


def test_detail_page_shows_dropzone_and_live_progress(client_a, tenant_a, kb):
    document = make_document(tenant_a.tenant, kb, name="queued.txt")
    page = client_a.get(f"/knowledge/{kb.pk}/").content.decode()
    assert 'id="dropzone"' in page and "knowledge/upload.js" in page
    assert 'hx-trigger="every 2s"' in page  # a document is queued: the table polls
    assert "queued.txt" in page
    services.document_process(tenant=tenant_a.tenant, document_id=document.pk)
    partial = client_a.get(f"/knowledge/{kb.pk}/documents/", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in partial  # everything is ready: polling stops
    assert "Ready" in partial and "1 / 1 chunks" in partial


def test_embedding_progress_is_shown_while_embedding(client_a, tenant_a, kb):
    document = make_document(tenant_a.tenant, kb)
    with tenant_scope(tenant_a.tenant):
        Document.objects.filter(pk=document.pk).update(status="embedding", chunks_total=40, chunks_embedded=10)
    partial = client_a.get(f"/knowledge/{kb.pk}/documents/").content.decode()
    assert 'value="25"' in partial and "10 / 40 chunks" in partial and "every 2s" in partial


def test_failed_document_shows_reason_and_retry(client_a, tenant_a, kb):
    document = make_document(tenant_a.tenant, kb)
    with tenant_scope(tenant_a.tenant):
        Document.objects.filter(pk=document.pk).update(
            status="failed", error="The PDF has no extractable text; OCR not supported.")
    page = client_a.get(f"/knowledge/{kb.pk}/").content.decode()
    assert "OCR not supported" in page and f"/knowledge/documents/{document.pk}/retry/" in page
    response = client_a.post(f"/knowledge/documents/{document.pk}/retry/")
    assert response.status_code == 302
    with tenant_scope(tenant_a.tenant):
        assert Document.objects.get(pk=document.pk).status == "queued"


def test_failure_reason_in_korean(client_a, tenant_a, kb):
    document = make_document(tenant_a.tenant, kb)
    with tenant_scope(tenant_a.tenant):
        Document.objects.filter(pk=document.pk).update(
            status="failed", error="The PDF has no extractable text; OCR not supported.")
    client_a.post("/i18n/setlang/", {"language": "ko", "next": "/"})
    page = client_a.get(f"/knowledge/{kb.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "OCR" in page


def test_web_upload_json_replies(client_a, tenant_a, kb, settings):
    url = f"/knowledge/{kb.pk}/upload/"
    ok = client_a.post(url, {"file": SimpleUploadedFile("노트.md", "# 제목\n\n본문".encode())}, **JSON)
    assert ok.status_code == 201 and ok.json()["ok"] and not ok.json()["duplicate"]
    dup = client_a.post(url, {"file": SimpleUploadedFile("copy.md", "# 제목\n\n본문".encode())}, **JSON)
    assert dup.status_code == 200 and dup.json()["duplicate"] and "not indexed again" in dup.json()["message"]
    bad = client_a.post(url, {"file": SimpleUploadedFile("deck.pptx", b"PK\x03\x04")}, **JSON)
    assert bad.status_code == 400 and "Supported" in bad.json()["message"]
    missing = client_a.post(url, {}, **JSON)
    assert missing.status_code == 400
    settings.INGEST_MAX_UPLOAD_MB = 1
    big = client_a.post(url, {"file": SimpleUploadedFile("big.txt", b"x" * (1024 * 1024 + 1))}, **JSON)
    assert big.status_code == 413 and "1 MB" in big.json()["message"]
    with tenant_scope(tenant_a.tenant):
        assert Document.objects.filter(kb=kb).count() == 1


def test_body_within_slack_but_file_over_limit_is_cut_off_by_the_upload_handler(rf, settings):
    """The Content-Length check allows for multipart overhead; the handler stops the file itself at the limit."""
    from knowledge.uploads import declared_too_large, install_limit

    settings.INGEST_MAX_UPLOAD_MB = 1
    request = rf.post("/x/", {"file": SimpleUploadedFile("big.txt", b"y" * (1024 * 1024 + 10_000))})
    assert not declared_too_large(request)
    handler = install_limit(request)
    files = request.FILES
    assert handler.exceeded and "file" not in files


def test_document_detail_and_delete(client_a, tenant_a, kb):
    document = services.document_process(tenant=tenant_a.tenant,
                                         document_id=make_document(tenant_a.tenant, kb, data="chunk text here").pk)
    page = client_a.get(f"/knowledge/documents/{document.pk}/").content.decode()
    assert "chunk text here" in page and "#0" in page
    response = client_a.post(f"/knowledge/documents/{document.pk}/delete/")
    assert response.status_code == 302
    with tenant_scope(tenant_a.tenant):
        assert not Document.objects.filter(pk=document.pk).exists()


def test_kb_settings_change_reindexes(client_a, tenant_a, kb):
    make_document(tenant_a.tenant, kb)
    response = client_a.post(f"/knowledge/{kb.pk}/edit/", {
        "name": "Web KB", "description": "", "language": "en", "embedding_model": "use-multilingual",
        "chunk_size": 600, "chunk_overlap": 60,
    })
    assert response.status_code == 302
    with tenant_scope(tenant_a.tenant):
        assert Document.objects.get(kb=kb).version == 2


def test_kb_delete_confirmation(client_a, tenant_a, kb):
    assert "cannot be undone" in client_a.get(f"/knowledge/{kb.pk}/delete/").content.decode()
    assert client_a.post(f"/knowledge/{kb.pk}/delete/").status_code == 302
    with tenant_scope(tenant_a.tenant):
        assert not KnowledgeBase.objects.filter(pk=kb.pk).exists()


def test_other_tenant_web_404(client_b, tenant_a, kb):
    document = make_document(tenant_a.tenant, kb)
    for url in (f"/knowledge/{kb.pk}/", f"/knowledge/{kb.pk}/documents/", f"/knowledge/documents/{document.pk}/"):
        assert client_b.get(url).status_code == 404
    assert client_b.post(f"/knowledge/{kb.pk}/upload/", {"file": SimpleUploadedFile("a.txt", b"x")}).status_code == 404
    assert kb.name not in client_b.get("/knowledge/").content.decode()


def test_browser_upload_with_csrf_enforced(tenant_a, kb, settings):
    """As in a real browser: CSRF checked (after the size limit is installed), token sent as X-CSRFToken."""
    from django.test import Client

    from accounts.middleware import SESSION_TENANT_KEY

    client = Client(enforce_csrf_checks=True)
    client.force_login(tenant_a.owner)
    session = client.session
    session[SESSION_TENANT_KEY] = tenant_a.tenant.pk
    session.save()
    client.get(f"/knowledge/{kb.pk}/")
    token = client.cookies["csrftoken"].value
    url = f"/knowledge/{kb.pk}/upload/"
    refused = client.post(url, {"file": SimpleUploadedFile("a.txt", b"no token")}, **JSON)
    assert refused.status_code == 403
    ok = client.post(url, {"file": SimpleUploadedFile("a.txt", b"with token")}, HTTP_X_CSRFTOKEN=token, **JSON)
    assert ok.status_code == 201, ok.content
    settings.INGEST_MAX_UPLOAD_MB = 1
    big = client.post(url, {"file": SimpleUploadedFile("big.txt", b"z" * (1024 * 1024 + 5000))},
                      HTTP_X_CSRFTOKEN=token, **JSON)
    assert big.status_code == 413


def test_session_api_upload_with_csrf(tenant_a, kb):
    """The browser may also call the API with its session; the body is then read by DRF's CSRF check."""
    from rest_framework.test import APIClient

    from accounts.middleware import SESSION_TENANT_KEY

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(tenant_a.owner)
    session = client.session
    session[SESSION_TENANT_KEY] = tenant_a.tenant.pk
    session.save()
    client.get(f"/knowledge/{kb.pk}/")
    token = client.cookies["csrftoken"].value
    response = client.post(f"/api/v1/knowledge-bases/{kb.pk}/documents",
                           {"file": SimpleUploadedFile("s.txt", b"session upload")}, format="multipart",
                           HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201, response.content


def test_plain_form_upload_without_javascript(client_a, tenant_a, kb):
    response = client_a.post(f"/knowledge/{kb.pk}/upload/", {"file": [
        SimpleUploadedFile("one.md", b"# One\n\nfirst"), SimpleUploadedFile("two.txt", b"second"),
        SimpleUploadedFile("three.pptx", b"PK\x03\x04"),
    ]}, follow=True)
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == f"/knowledge/{kb.pk}/"
    assert "one.md: Queued for indexing." in page and "three.pptx: .pptx files are not supported" in page
    with tenant_scope(tenant_a.tenant):
        assert sorted(Document.objects.filter(kb=kb).values_list("filename", flat=True)) == ["one.md", "two.txt"]
