import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from knowledge import services
from knowledge.models import Document, KnowledgeBase
from tests.conftest import api_client
from tests.factories.knowledge import make_document, make_kb


def upload(client, kb_id, name, data, **extra):
    return client.post(f"/api/v1/knowledge-bases/{kb_id}/documents",
                       {"file": SimpleUploadedFile(name, data), **extra}, format="multipart")


@pytest.fixture
def kb(tenant_a):
    return make_kb(tenant_a.tenant, name="API KB")


def test_kb_crud(api_a, tenant_a):
    created = api_a.post("/api/v1/knowledge-bases", {"name": "Docs", "language": "ko"}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["embedding_model"] == "use-multilingual" and body["embedding_dim"] == 512
    kb_id = body["id"]
    assert api_a.get("/api/v1/knowledge-bases").json()["results"][0]["name"] == "Docs"
    patched = api_a.patch(f"/api/v1/knowledge-bases/{kb_id}", {"description": "설명"}, format="json")
    assert patched.status_code == 200 and patched.json()["description"] == "설명"
    clash = api_a.post("/api/v1/knowledge-bases", {"name": "docs"}, format="json")
    assert clash.status_code == 400 and "name" in clash.json()["error"]["fields"]
    bad_model = api_a.post("/api/v1/knowledge-bases", {"name": "X", "embedding_model": "st:/etc/passwd"},
                           format="json")
    assert bad_model.status_code == 400 and "embedding_model" in bad_model.json()["error"]["fields"]
    assert api_a.delete(f"/api/v1/knowledge-bases/{kb_id}").status_code == 204
    with tenant_scope(tenant_a.tenant):
        assert not KnowledgeBase.objects.filter(pk=kb_id).exists()


def test_local_only_tenant_cannot_use_openai_embeddings(api_a, tenant_a, settings):
    settings.EMBEDDING_MODELS = ["use-multilingual", "openai:text-embedding-3-small"]
    tenant_a.tenant.data_policy = "local_only"
    tenant_a.tenant.save()
    response = api_a.post("/api/v1/knowledge-bases", {"name": "Cloud", "embedding_model": "openai:text-embedding-3-small"},
                          format="json")
    assert response.status_code == 400
    assert "local models only" in response.json()["error"]["message"]


def test_upload_then_status_and_progress(api_a, tenant_a, kb):
    response = upload(api_a, kb.pk, "guide.md", "# 안내\n\n내용입니다.".encode(), title="My guide")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["duplicate"] is False and body["title"] == "My guide"
    assert body["content_type"] == "text/markdown"
    services.document_process(tenant=tenant_a.tenant, document_id=body["id"])
    detail = api_a.get(f"/api/v1/documents/{body['id']}").json()
    assert detail["status"] == "ready"
    assert detail["progress"] == {"chunks_embedded": 1, "chunks_total": 1, "percent": 100}
    chunks = api_a.get(f"/api/v1/documents/{body['id']}/chunks").json()["results"]
    assert chunks[0]["heading_path"] == "안내" and "embedding" not in chunks[0]
    listed = api_a.get(f"/api/v1/knowledge-bases/{kb.pk}/documents?status=ready").json()
    assert [d["id"] for d in listed["results"]] == [body["id"]]
    assert api_a.get(f"/api/v1/knowledge-bases/{kb.pk}/documents?status=bogus").status_code == 400


def test_duplicate_upload_returns_existing_document(api_a, kb):
    first = upload(api_a, kb.pk, "a.txt", b"identical content")
    second = upload(api_a, kb.pk, "renamed.txt", b"identical content")
    assert second.status_code == 200
    assert second.json()["duplicate"] is True and second.json()["id"] == first.json()["id"]


@pytest.mark.parametrize("name,data,code", [
    ("slides.pptx", b"PK\x03\x04whatever", "unsupported_type"),
    ("empty.txt", b"", "empty"),
    ("fake.pdf", b"hello there, not a pdf", "bad_file"),
    ("binary.txt", bytes(range(256)) * 8, "bad_file"),
])
def test_bad_uploads_get_clear_400(api_a, kb, name, data, code):
    response = upload(api_a, kb.pk, name, data)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["fields"]["file"]
    assert error["message"].startswith("file: ")
    with tenant_scope(kb.tenant):
        assert not Document.objects.filter(kb=kb).exists()


def test_upload_without_file(api_a, kb):
    response = api_a.post(f"/api/v1/knowledge-bases/{kb.pk}/documents", {}, format="multipart")
    assert response.status_code == 400


def test_upload_over_size_limit_is_413(api_a, kb, settings):
    settings.INGEST_MAX_UPLOAD_MB = 1
    response = upload(api_a, kb.pk, "big.txt", b"a" * (1024 * 1024 + 10))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert "1 MB" in response.json()["error"]["message"]
    with tenant_scope(kb.tenant):
        assert not Document.objects.filter(kb=kb).exists()


def test_upload_over_size_limit_refused_on_content_length_before_reading(api_a, kb, settings):
    settings.INGEST_MAX_UPLOAD_MB = 1
    # A body that announces 5 MB but is never read: the view must answer from the header alone.
    response = api_a.generic("POST", f"/api/v1/knowledge-bases/{kb.pk}/documents", b"",
                             content_type="multipart/form-data; boundary=xyz", CONTENT_LENGTH=str(5 * 1024 * 1024))
    assert response.status_code == 413


def test_upload_needs_write_scope(tenant_a, kb):
    _key, raw = api_key_create(tenant=tenant_a.tenant, name="reader", scopes=["read", "chat"])
    reader = api_client(raw)
    response = upload(reader, kb.pk, "a.txt", b"text")
    assert response.status_code == 403
    assert "write" in response.json()["error"]["message"]
    assert reader.get(f"/api/v1/knowledge-bases/{kb.pk}/documents").status_code == 200
    for method, url in (("post", "/api/v1/knowledge-bases"), ("delete", f"/api/v1/knowledge-bases/{kb.pk}"),
                        ("post", f"/api/v1/knowledge-bases/{kb.pk}/reindex")):
        assert getattr(reader, method)(url).status_code == 403


def test_retry_reindex_delete(api_a, tenant_a, kb):
    document = make_document(tenant_a.tenant, kb, name="scan.txt", data="x")
    assert api_a.post(f"/api/v1/documents/{document.pk}/retry").status_code == 409  # not failed
    with tenant_scope(tenant_a.tenant):
        Document.objects.filter(pk=document.pk).update(status="failed", error="boom")
    retried = api_a.post(f"/api/v1/documents/{document.pk}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "queued" and retried.json()["version"] == 2
    reindexed = api_a.post(f"/api/v1/documents/{document.pk}/reindex")
    assert reindexed.status_code == 202 and reindexed.json()["version"] == 3
    assert api_a.post(f"/api/v1/knowledge-bases/{kb.pk}/reindex").json() == {"queued": 1}
    assert api_a.delete(f"/api/v1/documents/{document.pk}").status_code == 204
    assert api_a.get(f"/api/v1/documents/{document.pk}").status_code == 404


def test_other_tenant_gets_404_for_kb_documents_and_chunks(api_b, tenant_a, kb):
    document = services.document_process(tenant=tenant_a.tenant,
                                         document_id=make_document(tenant_a.tenant, kb).pk)
    for url in (f"/api/v1/knowledge-bases/{kb.pk}", f"/api/v1/knowledge-bases/{kb.pk}/documents",
                f"/api/v1/documents/{document.pk}", f"/api/v1/documents/{document.pk}/chunks"):
        assert api_b.get(url).status_code == 404
    assert upload(api_b, kb.pk, "intruder.txt", b"hi").status_code == 404
    assert api_b.get("/api/v1/knowledge-bases").json()["results"] == []
