"""Questions in another language than the KB's: a near-empty BM25 list must not push the dense order down."""

import numpy as np
import pytest

from knowledge.embeddings import get_embedder
from knowledge.search import dense
from knowledge.search.config import dense_weight_prior
from knowledge.search.fusion import fuse
from knowledge.search.selectors import search, search_payer
from tests.factories.search import make_indexed_document, make_search_kb, unit

KOREAN_QUESTION = "API 키는 어디에서 만드나요?"  # "Where do I create an API key?"
ENGLISH_QUESTION = "Where do I create an API key?"


def _prime(text: str, vector) -> None:
    """The query's vector, as if the KB's embedding model had embedded it (the test fixes the dense order)."""
    with dense._cache_lock:
        dense._QUERY_CACHE[("use-multilingual", text)] = np.asarray(vector, dtype=np.float32)


def _english_kb(tenant):
    """Three English chunks whose vectors rank keys, then billing, then the API reference for the question;
    only the last shares a word ("API") with the Korean question."""
    kb = make_search_kb(tenant, language="en")
    question = unit(np.eye(512)[0])
    texts = ["Where do I create an access key? Under Settings, then Access keys; copy it once.",
             "Invoices are sent on the first day of every month.",
             "The API reference lists every endpoint with examples."]
    vectors = [unit(question + 0.2 * np.eye(512)[1]), unit(question + 1.0 * np.eye(512)[2]),
               unit(question + 3.0 * np.eye(512)[3])]
    docs = [make_indexed_document(tenant, kb, [text], vectors=[vector], title=f"Doc {i}")
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))]
    return kb, question, docs


def test_korean_question_over_english_kb_keeps_the_dense_order(tenant_a):
    kb, question, docs = _english_kb(tenant_a.tenant)
    _prime(KOREAN_QUESTION, question)
    bm25 = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=KOREAN_QUESTION, k=3, options={"mode": "bm25"})
    assert [h.document_id for h in bm25.hits] == [docs[2].pk]  # the near-empty list: one word matched
    dense_only = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=KOREAN_QUESTION, k=3, options={"mode": "dense"})
    assert [h.document_id for h in dense_only.hits] == [d.pk for d in docs]

    result = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=KOREAN_QUESTION, k=3)
    assert [h.document_id for h in result.hits] == [d.pk for d in docs]  # the dense order, not the BM25 hit first
    assert result.query_language == "ko" and result.weights["kb_language"] == "en"
    assert result.weights["lexical_coverage"] < 0.1 and result.weights["bm25"] < result.weights["dense"]
    top = result.hits[0]
    assert top.bm25_part == 0 and top.dense_part > 0 and top.score == round(top.bm25_part + top.dense_part, 6)

    # With the static weights (BM25 1.0, USE 0.05) the one keyword match would have come first.
    bm25_hits = [(h.chunk_id, h.bm25_score) for h in bm25.hits]
    dense_hits = [(h.chunk_id, h.dense_score) for h in dense_only.hits]
    assert fuse(bm25_hits, dense_hits, bm25_weight=1.0, dense_weight=0.05)[0].chunk_id == bm25.hits[0].chunk_id


def test_a_question_in_the_kbs_language_keeps_the_configured_weights(tenant_a):
    kb, question, docs = _english_kb(tenant_a.tenant)
    _prime(ENGLISH_QUESTION, question)
    result = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=ENGLISH_QUESTION, k=3)
    assert result.query_language == "en" and result.weights["kb_language"] == "en"
    assert result.weights["lexical_trust"] == 1.0
    assert (result.weights["bm25"], result.weights["dense"]) == (1.0, 0.05)  # USE's prior, as before
    bm25_only = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=ENGLISH_QUESTION, k=1, options={"mode": "bm25"})
    assert result.hits[0].document_id == bm25_only.hits[0].document_id  # keywords lead as they always did
    assert search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=ENGLISH_QUESTION, k=3,
                  options={"mode": "bm25"}).weights is None


def _kb_with_real_vectors(tenant, language, texts):
    """A KB embedded with the default model, as ingestion would embed it."""
    kb = make_search_kb(tenant, language=language)
    vectors = get_embedder("use-multilingual").embed_documents(texts)
    docs = [make_indexed_document(tenant, kb, [text], vectors=[vector], title=f"Doc {i}")
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))]
    return kb, docs


def test_korean_question_finds_the_english_passage_and_the_reverse(tenant_a):
    english, en_docs = _kb_with_real_vectors(tenant_a.tenant, "auto", [
        "The office is closed on public holidays and weekends.",
        "You can return any item for a full refund within 30 days of purchase.",
        "Passwords must be changed every 90 days.",
    ])
    result = search(tenant=tenant_a.tenant, kb_ids=[english.pk], query="환불은 며칠 안에 받을 수 있나요?", k=3)
    assert result.hits[0].document_id == en_docs[1].pk
    assert result.query_language == "ko" and result.weights["kb_language"] == "en"

    korean, ko_docs = _kb_with_real_vectors(tenant_a.tenant, "auto", [
        "사무실은 공휴일과 주말에 문을 닫습니다.",
        "구매 후 30일 이내에는 모든 상품을 전액 환불받을 수 있습니다.",
        "비밀번호는 90일마다 바꿔야 합니다.",
    ])
    result = search(tenant=tenant_a.tenant, kb_ids=[korean.pk], query="How many days do I have to get a refund?", k=3)
    assert result.hits[0].document_id == ko_docs[1].pk
    assert result.query_language == "en" and result.weights["kb_language"] == "ko"


def _fake_gateway(monkeypatch, answer):
    from billing.types import Usage
    from llm import gateway
    from llm.types import ChatResult, LLMError

    calls = []

    def chat_sync(*, tenant, target, request, usage, **kwargs):
        calls.append({"tenant": tenant, "target": target, "usage": usage, "system": request.messages[0]["content"]})
        if answer is None:
            raise LLMError("connection refused", retryable=True)
        return ChatResult(text=answer, usage=Usage())

    monkeypatch.setattr(gateway, "chat_sync", chat_sync)
    return calls


def test_a_configured_model_translates_the_question_into_the_kbs_language(tenant_a, monkeypatch, settings):
    settings.SEARCH_LLM_MODEL = "local/llama3.2"
    calls = _fake_gateway(monkeypatch, "Where do I create an API key?\n")
    kb, question, docs = _english_kb(tenant_a.tenant)
    result = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=KOREAN_QUESTION, k=3, options={"mode": "bm25"},
                    usage=search_payer(user_id=tenant_a.owner.pk))
    assert result.queries == [KOREAN_QUESTION, "Where do I create an API key?"]
    # The Korean words alone match only the API reference by keywords; the translation finds the key passage.
    assert docs[0].pk in {h.document_id for h in result.hits}
    assert len(calls) == 1 and "into English" in calls[0]["system"] and calls[0]["tenant"] == tenant_a.tenant
    assert calls[0]["usage"].stage == "expansion" and calls[0]["usage"].user_id == tenant_a.owner.pk
    assert not result.warnings
    # A question in the passages' language is not translated.
    search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=ENGLISH_QUESTION, k=3)
    assert len(calls) == 1


def test_translation_is_skipped_without_a_model_and_with_a_model_down(tenant_a, monkeypatch, settings):
    kb, question, docs = _english_kb(tenant_a.tenant)
    _prime(KOREAN_QUESTION, question)
    settings.SEARCH_LLM_MODEL = ""
    calls = _fake_gateway(monkeypatch, "unused")
    quiet = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=KOREAN_QUESTION, k=3)
    assert calls == [] and quiet.queries == [KOREAN_QUESTION] and not quiet.warnings

    settings.SEARCH_LLM_MODEL = "local/llama3.2"
    down = _fake_gateway(monkeypatch, None)
    result = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=KOREAN_QUESTION, k=3)
    assert len(down) == 1 and result.queries == [KOREAN_QUESTION]
    assert [h.document_id for h in result.hits] == [d.pk for d in docs]  # still answers, dense order kept
    assert len(result.warnings) == 1 and "unavailable" in result.warnings[0]
    # An answer that is no translation (still Korean) is not used.
    _fake_gateway(monkeypatch, "API 키 만들기")
    assert search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=KOREAN_QUESTION, k=3).queries == [KOREAN_QUESTION]


@pytest.mark.parametrize(("language", "expected"), [("en", 0.7), ("ko", 0.5)])
def test_e5_weighs_its_vectors_by_the_passages_language(tenant_a, language, expected):
    kb = make_search_kb(tenant_a.tenant, language=language, model="multilingual-e5-small", dim=384)
    query = "refund window" if language == "en" else "환불 기간"
    make_indexed_document(tenant_a.tenant, kb, [f"{query} thirty days"], vectors=[unit(np.ones(384))])
    dense._QUERY_CACHE[("multilingual-e5-small", query)] = unit(np.ones(384))
    result = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query=query, k=1)
    assert (result.weights["kb_language"], result.weights["dense"]) == (language, expected)


def test_an_operators_prior_for_a_model_wins_over_its_language_prior(settings):
    settings.SEARCH_DENSE_WEIGHT_PRIORS = {"multilingual-e5-small": 0.3}
    assert dense_weight_prior("multilingual-e5-small", "en") == 0.3
    settings.SEARCH_DENSE_WEIGHT_PRIORS = {}
    assert (dense_weight_prior("multilingual-e5-small", "en"), dense_weight_prior("multilingual-e5-small", None)) \
        == (0.7, 0.5)
