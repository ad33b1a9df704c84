"""Query language detection, lexical coverage and the per-query side weights that follow from them."""

import math

import pytest

from accounts.tenancy import tenant_scope
from knowledge.search.bm25 import KbParams, bm25_search
from knowledge.search.fusion import CROSS_LANGUAGE_TRUST, side_weights
from knowledge.search.language import (
    kb_language,
    lexical_coverage,
    query_language,
    text_language,
)
from tests.factories.search import make_indexed_document, make_search_kb


@pytest.mark.parametrize("text, language", [
    ("환불 기간은 얼마인가요?", "ko"),
    ("How long is the refund window?", "en"),
    ("BST란 무엇인가", "ko"),  # a Latin acronym inside a Korean question
    ("What does 환불 mean?", "en"),  # a Korean word inside an English question
    ("2024-01-31 #42", ""),
    ("", ""),
])
def test_query_language(text, language):
    assert query_language(text) == language


def test_text_language_of_a_collection():
    assert text_language(["환불은 30일 이내에 가능합니다.", "배송은 3일 걸립니다."]) == "ko"
    assert text_language(["Refunds within 30 days.", "Shipping takes three days."]) == "en"
    assert text_language(["환불은 30일 이내에 가능합니다.", "Refunds within thirty days, shipping takes three days."]) == ""
    assert text_language(["123", ""]) == ""


def test_lexical_coverage_by_hand():
    n = 100
    idf = math.log((n - 10 + 0.5) / (10 + 0.5))
    unseen = math.log((n + 0.5) / 0.5)
    assert lexical_coverage([(1, 10), (2, 10)], n) == pytest.approx(1.0)
    assert lexical_coverage([(1, 0), (1, 0)], n) == 0.0
    assert lexical_coverage([(1, 10), (1, 0)], n) == pytest.approx(idf / (idf + unseen))
    assert lexical_coverage([], n) == 1.0  # nothing to miss
    assert lexical_coverage([(1, 0)], 0) == 1.0  # an empty KB: nothing to weigh


def test_side_weights_keep_the_prior_when_the_kb_knows_the_words():
    w = side_weights(bm25_weight=1.0, dense_weight=0.05, coverage=0.9, cross_language=False)
    assert (w.bm25, w.dense, w.lexical_trust) == (1.0, 0.05, 1.0)


def test_side_weights_hand_the_ranking_to_the_dense_side_without_lexical_evidence():
    none = side_weights(bm25_weight=1.0, dense_weight=0.05, coverage=0.0, cross_language=True)
    assert (none.bm25, none.dense, none.lexical_trust) == (0.0, 1.0, 0.0)
    some = side_weights(bm25_weight=1.0, dense_weight=0.05, coverage=0.1, cross_language=False)
    assert some.bm25 < some.dense and some.bm25 + some.dense == pytest.approx(1.0)
    # Another language than the passages': never fully trusted, however many words happen to match.
    cross = side_weights(bm25_weight=1.0, dense_weight=0.05, coverage=1.0, cross_language=True)
    assert cross.lexical_trust == CROSS_LANGUAGE_TRUST and cross.bm25 == CROSS_LANGUAGE_TRUST
    # A strong dense prior is never lowered.
    assert side_weights(bm25_weight=1.0, dense_weight=2.0, coverage=0.0, cross_language=True).dense == 2.0


def test_kb_language_from_setting_or_content(tenant_a):
    tenant = tenant_a.tenant
    stated = make_search_kb(tenant, language="ko")
    english = make_search_kb(tenant)  # "auto": read from its chunks
    make_indexed_document(tenant, english, ["Refunds are possible within 30 days.", "Shipping takes 3 days."])
    korean = make_search_kb(tenant)
    make_indexed_document(tenant, korean, ["환불은 30일 이내에 가능합니다.", "배송은 3일 걸립니다."])
    with tenant_scope(tenant):
        assert kb_language(tenant=tenant, kbs=[stated]) == "ko"
        assert kb_language(tenant=tenant, kbs=[english]) == "en"
        assert kb_language(tenant=tenant, kbs=[korean]) == "ko"
        assert kb_language(tenant=tenant, kbs=[english, korean]) == ""


def _coverage(tenant, kb, query: str) -> float:
    trace: dict = {}
    bm25_search(tenant=tenant, kbs=[KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)], query=query, limit=5, trace=trace)
    return trace["lexical_coverage"]


def test_the_bm25_side_measures_the_lexical_coverage_from_the_index(tenant_a, tenant_b):
    kb = make_search_kb(tenant_a.tenant)
    make_indexed_document(tenant_a.tenant, kb, ["Refunds are possible within 30 days.", "Shipping takes 3 days.",
                                                "Our office is in Seoul."])
    with tenant_scope(tenant_a.tenant):
        assert _coverage(tenant_a.tenant, kb, "refunds shipping") == pytest.approx(1.0)
        assert _coverage(tenant_a.tenant, kb, "환불 기간") == 0.0
        assert 0 < _coverage(tenant_a.tenant, kb, "refunds 환불") < 1
        assert _coverage(tenant_a.tenant, kb, "!!") == 1.0  # no terms: nothing to miss
    # Another tenant's index is not read, even with the KB's id: nothing there, nothing to weigh.
    with tenant_scope(tenant_b.tenant):
        assert _coverage(tenant_b.tenant, kb, "refunds shipping") == 1.0
