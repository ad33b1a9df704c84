"""Search API validation and results, the retrieval test page, settings, and evaluation as a feature."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.tenancy import tenant_scope
from knowledge.models import KnowledgeBase
from knowledge.search.evaluation.files import UploadError, parse_questions
from knowledge.search.evaluation.runs import eval_run_execute
from knowledge.search.evaluation.services import EvalRunError, eval_question_create, eval_run_create
from knowledge.search.models import EvalQuestion, EvalRun
from tests.conftest import web_client
from tests.factories.search import make_indexed_document, make_search_kb


@pytest.fixture
def kb_a(tenant_a):
    kb = make_search_kb(tenant_a.tenant, name="Handbook")
    make_indexed_document(tenant_a.tenant, kb, ["Refunds are possible within 30 days.", "Shipping takes 3 days."],
                          title="Policies")
    make_indexed_document(tenant_a.tenant, kb, ["Passwords rotate every 90 days."], title="Security")
    return kb


def test_search_api_returns_ranked_hits_with_both_sides(api_a, kb_a):
    response = api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/search", {"query": "refund 30 days", "k": 2},
                          format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["mode"] == "hybrid" and len(body["hits"]) == 2
    top = body["hits"][0]
    assert top["text"] == "Refunds are possible within 30 days." and top["document_title"] == "Policies"
    assert "bm25" in top["found_by"] and top["bm25_score"] > 0 and top["dense_score"] is not None


@pytest.mark.parametrize("payload, field", [
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({}, "query"),
    ({"query": "refund", "k": 0}, "k"),
    ({"query": "refund", "k": 51}, "k"),
    ({"query": "refund", "k": "many"}, "k"),
    ({"query": "x" * 2001}, "query"),
    ({"query": "refund", "options": {"mode": "psychic"}}, "options"),
    ({"query": "refund", "options": {"rerank_model": "/etc/passwd"}}, "options"),
    ({"query": "refund", "filters": {"document_ids": ["a"]}}, "filters"),
])
def test_search_api_validation(api_a, kb_a, payload, field):
    response = api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/search", payload, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]


def test_search_api_unknown_or_foreign_kb_is_404(api_a, api_b, kb_a):
    assert api_a.post("/api/v1/knowledge-bases/999999/search", {"query": "x"}, format="json").status_code == 404
    # Another tenant's KB: 404 even with an invalid body (existence never leaks through validation).
    assert api_b.post(f"/api/v1/knowledge-bases/{kb_a.pk}/search", {"query": ""}, format="json").status_code == 404
    assert api_b.post("/api/v1/search", {"query": "refund", "kb_ids": [kb_a.pk]}, format="json").status_code == 404


def test_multi_kb_search(api_a, tenant_a, kb_a):
    other = make_search_kb(tenant_a.tenant, name="Other")
    make_indexed_document(tenant_a.tenant, other, ["Refunds for gift cards are not possible."], title="Gift cards")
    response = api_a.post("/api/v1/search", {"query": "refunds", "kb_ids": [kb_a.pk, other.pk], "k": 5,
                                             "options": {"mode": "bm25"}}, format="json")
    assert response.status_code == 200, response.content
    assert {h["kb_id"] for h in response.json()["hits"]} == {kb_a.pk, other.pk}
    bad = api_a.post("/api/v1/search", {"query": "refunds", "kb_ids": []}, format="json")
    assert bad.status_code == 400
    assert api_a.post("/api/v1/search", {"query": "refunds", "kb_ids": [kb_a.pk, 999999]},
                      format="json").status_code == 404


def test_multi_kb_scores_compare_across_kbs(api_a, tenant_a):
    """A word rare in a small KB must not outrank the answer in a KB where that word is common: each KB's own
    statistics would give the sample's short "model" row the top score (idf 3.3 there, below 0 in the lecture)."""
    lecture = make_search_kb(tenant_a.tenant, name="Lecture")
    filler = [f"The model {topic} lesson covers the model in depth, step by step." for topic in range(30)]
    answer = ("Model pricing: the input column is the price per million prompt tokens and the output column "
              "the price per million generated tokens, billed monthly for every model of the course.")
    make_indexed_document(tenant_a.tenant, lecture, [answer, *filler, *[f"Week {i} homework." for i in range(9)]],
                          title="Lecture notes")
    sample = make_search_kb(tenant_a.tenant, name="Sample")
    make_indexed_document(tenant_a.tenant, sample, ["HTML model model.", *[f"Row {i} of the sample table." for i in range(39)]],
                          title="Sample rows")
    top = api_a.post("/api/v1/search", {"query": "model pricing", "kb_ids": [sample.pk, lecture.pk], "k": 3,
                                        "options": {"mode": "bm25"}}, format="json").json()["hits"][0]
    assert top["text"] == answer
    alone = api_a.post(f"/api/v1/knowledge-bases/{sample.pk}/search",
                       {"query": "model pricing", "k": 1, "options": {"mode": "bm25"}}, format="json").json()
    assert alone["hits"][0]["bm25_score"] > api_a.post(
        f"/api/v1/knowledge-bases/{lecture.pk}/search", {"query": "model pricing", "k": 1, "options": {"mode": "bm25"}},
        format="json").json()["hits"][0]["bm25_score"]  # the naive merge of per-KB scores ranks the sample row first


def test_search_api_needs_read_scope(tenant_a, kb_a):
    from accounts.services import api_key_create
    from tests.conftest import api_client

    _key, raw = api_key_create(tenant=tenant_a.tenant, name="chat only", scopes=["chat"])
    response = api_client(raw).post(f"/api/v1/knowledge-bases/{kb_a.pk}/search", {"query": "refund"}, format="json")
    assert response.status_code == 403


def test_retrieval_test_page(client_a, kb_a, tenant_a):
    page = client_a.get(f"/knowledge/search/{kb_a.pk}/", {"query": "refund 30 days", "mode": "hybrid", "k": 3})
    assert page.status_code == 200
    html = page.content.decode()
    assert "Refunds are possible within 30 days." in html and "Policies" in html and "BM25 #1" in html
    partial = client_a.get(f"/knowledge/search/{kb_a.pk}/", {"query": "refund", "mode": "bm25", "k": 3},
                           HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and "<html" not in partial.content.decode()
    member = web_client(tenant_a.member, tenant_a.tenant)
    assert member.get(f"/knowledge/search/{kb_a.pk}/").status_code == 403


def test_search_api_and_test_page_show_the_query_language_and_the_weights(api_a, client_a, kb_a):
    body = api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/search", {"query": "환불 기간", "k": 3},
                      format="json").json()
    assert body["query_language"] == "ko"
    weights = body["weights"]
    assert weights["kb_language"] == "en" and weights["lexical_coverage"] == 0.0  # no Korean word in the KB
    assert weights["bm25"] == 0.0 and weights["dense"] >= 1.0 and weights["lexical_trust"] == 0.0
    assert all(hit["bm25_part"] == 0.0 and hit["score"] == hit["dense_part"] for hit in body["hits"])
    english = api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/search", {"query": "refunds 30 days", "k": 1},
                         format="json").json()
    assert english["query_language"] == "en" and english["weights"]["lexical_trust"] == 1.0
    assert api_a.post(f"/api/v1/knowledge-bases/{kb_a.pk}/search",
                      {"query": "refunds", "options": {"mode": "bm25"}}, format="json").json()["weights"] is None

    html = client_a.get(f"/knowledge/search/{kb_a.pk}/", {"query": "환불 기간", "mode": "hybrid", "k": 3}).content.decode()
    assert "Question language" in html and "Korean" in html and "passages" in html and "English" in html
    assert "BM25 0.00" in html and "the vector ranking leads" in html and kb_a.embedding_model in html


def test_settings_page_saves_valid_settings_only(client_a, kb_a):
    url = f"/knowledge/search/{kb_a.pk}/settings/"
    assert client_a.get(url).status_code == 200
    form = {"mode": "hybrid", "k": 6, "fusion": "rrf", "bm25_weight": 1, "dense_weight": 0.4, "k1": 1.2, "b": 0.75,
            "mmr_lambda": "", "neighbors": 1, "expansion_model": "", "compression_model": "", "rerank_model": ""}
    assert client_a.post(url, form).status_code == 302
    with tenant_scope(kb_a.tenant):
        kb_a.refresh_from_db()
    assert kb_a.retrieval["fusion"] == "rrf" and kb_a.retrieval["k"] == 6 and kb_a.retrieval["neighbors"] == 1
    bad = client_a.post(url, {**form, "b": 7})
    assert bad.status_code == 200 and "errorlist" in bad.content.decode()
    with tenant_scope(kb_a.tenant):
        kb_a.refresh_from_db()
    assert kb_a.retrieval["b"] == 0.75


def test_parse_questions_jsonl_and_csv():
    jsonl = b'{"question": "Q1?", "expected": ["a.txt", 7]}\n\n{"query": "Q2?", "documents": "b"}\n'
    assert [(q.text, q.refs) for q in parse_questions(jsonl, "q.jsonl")] == [("Q1?", ["a.txt", "7"]), ("Q2?", ["b"])]
    csv_data = b"question,expected\nQ3?,a.txt|Security\n"
    assert [(q.text, q.refs) for q in parse_questions(csv_data, "q.csv")] == [("Q3?", ["a.txt", "Security"])]
    for bad in (b"{not json}\n", b"question\n\n", b"foo,bar\n1,2\n", "\xff".encode("latin-1")):
        with pytest.raises(UploadError):
            parse_questions(bad, "x.jsonl" if bad.startswith(b"{") else "x.csv")


def test_evaluation_feature_end_to_end(client_a, tenant_a, kb_a):
    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        policies = kb_a.documents.get(title="Policies")
        security = kb_a.documents.get(title="Security")
    upload = SimpleUploadedFile("questions.jsonl", (
        json.dumps({"question": "How long do refunds take?", "expected": ["Policies"]}) + "\n"
        + json.dumps({"question": "password rotation", "expected": [str(security.pk), "missing.pdf"]}) + "\n"
    ).encode())
    response = client_a.post(f"/knowledge/search/{kb_a.pk}/evaluation/upload/", {"file": upload})
    assert response.status_code == 302
    with tenant_scope(tenant):
        questions = list(EvalQuestion.objects.filter(kb=kb_a).order_by("pk"))
        assert [list(q.expected_documents.values_list("pk", flat=True)) for q in questions] == [[policies.pk],
                                                                                                 [security.pk]]
        assert questions[1].unresolved_refs == ["missing.pdf"]
    client_a.post(f"/knowledge/search/{kb_a.pk}/evaluation/questions/",
                  {"text": "shipping time", "documents": [str(policies.pk)]})
    assert client_a.post(f"/knowledge/search/{kb_a.pk}/evaluation/run/").status_code == 302
    with tenant_scope(tenant):
        run = EvalRun.objects.get(kb=kb_a)
    assert run.status == "queued" and run.question_count == 3  # a worker runs it (here: the service below)
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "done"
    with tenant_scope(tenant):
        run.refresh_from_db()
    assert run.status == "done" and run.question_count == 3 and run.progress == 3
    assert run.ndcg_at_10 == pytest.approx(1.0) and run.recall_at_k == pytest.approx(1.0) and run.mrr == 1.0
    assert run.settings["mode"] == "hybrid" and "fusion" in run.settings
    page = client_a.get(f"/knowledge/search/{kb_a.pk}/evaluation/")
    html = page.content.decode()
    assert page.status_code == 200 and "<svg" in html and "missing.pdf" in html
    detail = client_a.get(f"/knowledge/search/runs/{run.pk}/")
    assert detail.status_code == 200 and "password rotation" in detail.content.decode()
    # Deleting a question; another tenant cannot.
    question_id = questions[0].pk
    assert client_a.post(f"/knowledge/search/questions/{question_id}/delete/").status_code == 302
    with tenant_scope(tenant):
        assert not EvalQuestion.objects.filter(pk=question_id).exists()


def test_evaluation_metrics_when_search_misses(tenant_a, kb_a):
    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        security = kb_a.documents.get(title="Security")
    eval_question_create(tenant=tenant, kb=kb_a, text="refunds possible", document_ids=[security.pk])
    run = eval_run_create(tenant=tenant, kb=kb_a, options={"mode": "bm25"})
    # BM25 finds only "Policies" for this question: the expected document is not in the ranking at all.
    assert run.recall_at_k == 0.0 and run.ndcg_at_10 == 0.0 and run.mrr == 0.0
    empty_kb = make_search_kb(tenant)
    with pytest.raises(EvalRunError, match="expected document"):  # nothing to evaluate: no run is stored
        eval_run_create(tenant=tenant, kb=empty_kb)
    with tenant_scope(tenant):
        assert not EvalRun.objects.filter(kb=empty_kb).exists()


def test_question_must_reference_own_documents(tenant_a, tenant_b, kb_a):
    kb_b = make_search_kb(tenant_b.tenant)
    foreign = make_indexed_document(tenant_b.tenant, kb_b, ["secret"])
    with pytest.raises(UploadError):
        eval_question_create(tenant=tenant_a.tenant, kb=kb_a, text="q", document_ids=[foreign.pk])
    with tenant_scope(tenant_a.tenant):
        assert KnowledgeBase.objects.filter(pk=kb_b.pk).count() == 0
