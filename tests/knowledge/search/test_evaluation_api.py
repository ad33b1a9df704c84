"""Evaluation REST API: test questions (list, add, upload, get, delete) and runs (start -> 202, list, get),
validation in the API's error shape, scopes, and other tenants' or missing ids as 404."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from knowledge.search.evaluation import scoring
from knowledge.search.evaluation.runs import eval_run_execute
from knowledge.search.evaluation.services import eval_question_create, eval_run_create, eval_run_start
from knowledge.search.models import EvalQuestion, EvalRun
from tests.conftest import api_client
from tests.factories.search import make_indexed_document, make_search_kb


@pytest.fixture
def kb_a(tenant_a):
    kb = make_search_kb(tenant_a.tenant, name="Handbook", retrieval={"mode": "bm25"})
    kb.policies = make_indexed_document(tenant_a.tenant, kb, ["Refunds are possible within 30 days."],
                                        title="Policies")
    kb.security = make_indexed_document(tenant_a.tenant, kb, ["Passwords rotate every 90 days."], title="Security")
    return kb


@pytest.fixture
def kb_b(tenant_b):
    kb = make_search_kb(tenant_b.tenant, name="Other team")
    kb.secret = make_indexed_document(tenant_b.tenant, kb, ["Secret plans."], title="Secret")
    return kb


@pytest.fixture
def sent(monkeypatch):
    from knowledge.search.tasks import run_evaluation

    messages = []
    monkeypatch.setattr(run_evaluation, "delay", lambda **kwargs: messages.append(kwargs))
    return messages


def _error(response, status=400):
    assert response.status_code == status, response.content
    return response.json()["error"]


# ---------------------------------------------------------------- questions

def test_add_and_list_questions(api_a, kb_a):
    url = f"/api/v1/knowledge-bases/{kb_a.pk}/eval-questions"
    response = api_a.post(url, {"text": "  How long do refunds take?  ", "expected_document_ids": [kb_a.policies.pk]},
                          format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["text"] == "How long do refunds take?" and created["kb_id"] == kb_a.pk
    assert created["expected_documents"] == [{"id": kb_a.policies.pk, "title": "Policies"}]
    by_name = api_a.post(url, {"text": "password rotation", "expected": ["Security", "missing.pdf"]}, format="json")
    assert by_name.status_code == 201
    assert by_name.json()["expected_documents"] == [{"id": kb_a.security.pk, "title": "Security"}]
    assert by_name.json()["unresolved_refs"] == ["missing.pdf"]
    listed = api_a.get(url).json()
    assert listed["count"] == 2 and [q["id"] for q in listed["results"]] == [created["id"], by_name.json()["id"]]


@pytest.mark.parametrize("payload, field", [
    ({}, "text"),
    ({"text": "   ", "expected_document_ids": [1]}, "text"),
    ({"text": "x" * 4001, "expected_document_ids": [1]}, "text"),
    ({"text": "no documents"}, "expected_document_ids"),
    ({"text": "empty documents", "expected_document_ids": [], "expected": []}, "expected_document_ids"),
    ({"text": "bad ids", "expected_document_ids": ["a"]}, "expected_document_ids"),
    ({"text": "bad ids", "expected_document_ids": "7"}, "expected_document_ids"),
    ({"text": "unknown document", "expected_document_ids": [999999]}, "expected_document_ids"),
])
def test_add_question_validation(api_a, kb_a, payload, field):
    error = _error(api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-questions", payload, format="json"))
    assert error["code"] == "invalid" and field in error["fields"] and error["message"]
    with tenant_scope(kb_a.tenant):
        assert not EvalQuestion.objects.exists()


def test_question_cannot_expect_another_tenants_document(api_a, kb_a, kb_b):
    response = api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-questions",
                          {"text": "q", "expected_document_ids": [kb_b.secret.pk]}, format="json")
    error = _error(response)
    assert "belong to this knowledge base" in error["fields"]["expected_document_ids"][0]


def test_get_and_delete_a_question(api_a, api_b, tenant_a, kb_a):
    question = eval_question_create(tenant=tenant_a.tenant, kb=kb_a, text="q?", document_ids=[kb_a.policies.pk])
    url = f"/api/v1/eval-questions/{question.pk}"
    assert api_a.get(url).json()["text"] == "q?"
    assert api_b.get(url).status_code == 404 and api_b.delete(url).status_code == 404
    assert api_a.delete(url).status_code == 204
    assert _error(api_a.get(url), 404)["code"] == "not_found"
    assert api_a.delete(url).status_code == 404


def test_upload_questions(api_a, kb_a):
    url = f"/api/v1/knowledge-bases/{kb_a.pk}/eval-questions/upload"
    lines = [{"question": "refunds?", "expected": ["Policies"]},
             {"question": "passwords?", "expected": [str(kb_a.security.pk), "nowhere.txt"]}]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    response = api_a.post(url, {"file": SimpleUploadedFile("q.jsonl", data)}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json() == {"created": 2, "with_unresolved": 1}
    csv_data = b"question,expected\nshipping?,Policies|Security\n"
    response = api_a.post(url, {"file": SimpleUploadedFile("q.csv", csv_data)}, format="multipart")
    assert response.json() == {"created": 1, "with_unresolved": 0}
    with tenant_scope(kb_a.tenant):
        assert EvalQuestion.objects.filter(kb=kb_a).count() == 3


def test_upload_validation(api_a, kb_a, monkeypatch):
    url = f"/api/v1/knowledge-bases/{kb_a.pk}/eval-questions/upload"
    assert "file" in _error(api_a.post(url, {}, format="multipart"))["fields"]
    bad = _error(api_a.post(url, {"file": SimpleUploadedFile("q.jsonl", b'{"question": "ok"}\n{broken\n')},
                            format="multipart"))
    assert bad["fields"]["file"] == ["Line 2 is not valid JSON."]
    with tenant_scope(kb_a.tenant):
        assert not EvalQuestion.objects.exists()  # all or nothing
    monkeypatch.setattr("knowledge.search.evaluation_api.MAX_UPLOAD_BYTES", 10)
    too_large = api_a.post(url, {"file": SimpleUploadedFile("q.csv", b"question,expected\nlong question,x\n")},
                           format="multipart")
    assert _error(too_large, 413)["code"] == "too_large"


# ---------------------------------------------------------------- runs

def _questions(tenant, kb):
    eval_question_create(tenant=tenant, kb=kb, text="refunds 30 days", document_ids=[kb.policies.pk])
    eval_question_create(tenant=tenant, kb=kb, text="password rotate", document_ids=[kb.security.pk])


def test_start_run_returns_202_with_a_queued_run(api_a, tenant_a, kb_a, sent, django_capture_on_commit_callbacks):
    _questions(tenant_a.tenant, kb_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-runs",
                              {"k": 5, "options": {"fusion": "rrf"}}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["kb_id"] == kb_a.pk and body["k"] == 5
    assert body["question_count"] == 2 and body["progress"] == {"done": 0, "total": 2, "percent": 0}
    assert body["ndcg_at_10"] is None and body["settings"]["fusion"] == "rrf" and body["settings"]["mode"] == "bm25"
    assert sent == [{"run_id": body["id"], "tenant_id": tenant_a.tenant.pk}]
    # While it is queued another start is a conflict, not a second run.
    conflict = api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-runs", {}, format="json")
    assert _error(conflict, 409)["code"] == "conflict"
    # The worker's part, then the run as the client polls it.
    assert eval_run_execute(tenant=tenant_a.tenant, run_id=body["id"]) == "done"
    run = api_a.get(f"/api/v1/eval-runs/{body['id']}").json()
    assert run["status"] == "done" and run["progress"] == {"done": 2, "total": 2, "percent": 100}
    assert run["ndcg_at_10"] == pytest.approx(1.0) and run["recall_at_k"] == pytest.approx(1.0) and run["mrr"] == 1.0
    assert [row["question"] for row in run["per_question"]] == ["refunds 30 days", "password rotate"]
    assert run["per_question"][0]["found"][0] == kb_a.policies.pk and run["started_at"] and run["finished_at"]
    listed = api_a.get(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-runs").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == body["id"]
    assert "per_question" not in listed["results"][0]  # the list stays small


@pytest.mark.parametrize("payload, field", [
    ({"k": 0}, "k"), ({"k": 51}, "k"), ({"k": "many"}, "k"),
    ({"options": {"mode": "psychic"}}, "options"),
    ({"options": {"rerank_model": "/etc/passwd"}}, "options"),
    ({"options": "fast"}, "options"),
])
def test_start_run_validation(api_a, tenant_a, kb_a, sent, payload, field):
    _questions(tenant_a.tenant, kb_a)
    error = _error(api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-runs", payload, format="json"))
    assert field in error["fields"]
    with tenant_scope(tenant_a.tenant):
        assert not EvalRun.objects.exists()


def test_start_run_without_judged_questions_is_400(api_a, kb_a):
    error = _error(api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-runs", {}, format="json"))
    assert error["message"] == "No test question has an expected document yet."


def test_failed_run_through_the_api(api_a, tenant_a, kb_a, monkeypatch):
    _questions(tenant_a.tenant, kb_a)
    run = eval_run_start(tenant=tenant_a.tenant, kb=kb_a, enqueue=False)
    monkeypatch.setattr(scoring, "document_ranking", lambda **kw: (_ for _ in ()).throw(KeyError("chunk")))
    eval_run_execute(tenant=tenant_a.tenant, run_id=run.pk)
    body = api_a.get(f"/api/v1/eval-runs/{run.pk}").json()
    assert body["status"] == "failed" and body["error"] == "The evaluation failed: KeyError: 'chunk'"


def test_other_tenants_and_missing_ids_are_404(api_a, api_b, tenant_a, kb_a, kb_b, sent):
    _questions(tenant_a.tenant, kb_a)
    run = eval_run_create(tenant=tenant_a.tenant, kb=kb_a)
    with tenant_scope(tenant_a.tenant):
        question = EvalQuestion.objects.filter(kb=kb_a).first()
    base = f"/api/v1/knowledge-bases/{kb_a.pk}"
    # Tenant B: 404 for every endpoint of A's objects, even with an invalid body.
    assert api_b.get(f"{base}/eval-questions").status_code == 404
    assert api_b.post(f"{base}/eval-questions", {"text": ""}, format="json").status_code == 404
    assert api_b.post(f"{base}/eval-questions/upload", {}, format="multipart").status_code == 404
    assert api_b.get(f"{base}/eval-runs").status_code == 404
    assert api_b.post(f"{base}/eval-runs", {"k": 0}, format="json").status_code == 404
    assert api_b.get(f"/api/v1/eval-runs/{run.pk}").status_code == 404
    assert api_b.get(f"/api/v1/eval-questions/{question.pk}").status_code == 404
    assert api_b.delete(f"/api/v1/eval-questions/{question.pk}").status_code == 404
    # ... and A's own view of B's KB the same way; missing ids too.
    assert api_a.get(f"/api/v1/knowledge-bases/{kb_b.pk}/eval-runs").status_code == 404
    for url in ("/api/v1/knowledge-bases/999999/eval-questions", "/api/v1/knowledge-bases/999999/eval-runs",
                "/api/v1/eval-runs/999999", "/api/v1/eval-questions/999999"):
        assert _error(api_a.get(url), 404)["code"] == "not_found"
    assert sent == []
    with tenant_scope(tenant_a.tenant):
        assert EvalRun.objects.count() == 1 and EvalQuestion.objects.filter(pk=question.pk).exists()


def test_scopes(tenant_a, kb_a, sent):
    _questions(tenant_a.tenant, kb_a)
    _key, raw = api_key_create(tenant=tenant_a.tenant, name="read only", scopes=["read"])
    reader = api_client(raw)
    assert reader.get(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-questions").status_code == 200
    assert reader.get(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-runs").status_code == 200
    assert reader.post(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-runs", {}, format="json").status_code == 403
    assert reader.post(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-questions",
                       {"text": "q", "expected_document_ids": [kb_a.policies.pk]}, format="json").status_code == 403
    _key, raw = api_key_create(tenant=tenant_a.tenant, name="chat only", scopes=["chat"])
    assert api_client(raw).get(f"/api/v1/knowledge-bases/{kb_a.pk}/eval-runs").status_code == 403
    assert sent == []


def test_schema_documents_the_evaluation_endpoints(client):
    schema = client.get("/api/schema/").content.decode()
    for path in ("/api/v1/knowledge-bases/{kb_id}/eval-questions", "/api/v1/knowledge-bases/{kb_id}/eval-runs",
                 "/api/v1/eval-runs/{eval_run_id}", "/api/v1/eval-questions/{eval_question_id}",
                 "/api/v1/knowledge-bases/{kb_id}/eval-questions/upload"):
        assert f"{path}:" in schema
