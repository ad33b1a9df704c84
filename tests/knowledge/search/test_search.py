"""The search selector end to end on PostgreSQL: tenant and KB isolation, filters, modes, neighbours, and the
optional LLM steps failing soft."""

import pytest

from accounts.tenancy import tenant_scope
from knowledge.search import llm_steps
from knowledge.search.dense import embed_query
from knowledge.search.selectors import SearchError, search, search_payer
from tests.factories.search import make_indexed_document, make_search_kb

QUERY = "How long is the refund window?"


@pytest.fixture
def query_vector(db):
    return embed_query(tenant=None, model="use-multilingual", text=QUERY)


def test_other_tenants_nearest_chunk_never_appears(tenant_a, tenant_b, query_vector):
    kb_a = make_search_kb(tenant_a.tenant)
    kb_b = make_search_kb(tenant_b.tenant)
    # Tenant B's chunk is the query itself, word for word and as a vector: the best match on both sides.
    secret = make_indexed_document(tenant_b.tenant, kb_b, [QUERY + " The refund window is 30 days."],
                                   vectors=[query_vector], title="B secret")
    own = make_indexed_document(tenant_a.tenant, kb_a, ["Our refund window is 14 days.", "Shipping is free."],
                                title="A policy")
    for mode in ("hybrid", "bm25", "dense"):
        # Even when asked for B's KB id explicitly, A only ever sees A's rows.
        result = search(tenant=tenant_a.tenant, kb_ids=[kb_a.pk, kb_b.pk], query=QUERY, k=10, options={"mode": mode})
        assert result.hits, mode
        assert {h.document_id for h in result.hits} == {own.pk}, mode
        assert secret.pk not in {h.document_id for h in result.hits}
    b_result = search(tenant=tenant_b.tenant, kb_ids=[kb_b.pk], query=QUERY, k=3)
    assert b_result.hits[0].document_id == secret.pk
    assert b_result.hits[0].found_by == ["bm25", "dense"]


def test_kb_and_document_filters(tenant_a, query_vector):
    tenant = tenant_a.tenant
    kb1, kb2 = make_search_kb(tenant), make_search_kb(tenant)
    d1 = make_indexed_document(tenant, kb1, ["refund window policy one"], vectors=[query_vector])
    d2 = make_indexed_document(tenant, kb1, ["refund window policy two"])
    d3 = make_indexed_document(tenant, kb2, ["refund window policy three"], vectors=[query_vector])
    only_kb1 = search(tenant=tenant, kb_ids=[kb1.pk], query=QUERY, k=10)
    assert {h.document_id for h in only_kb1.hits} == {d1.pk, d2.pk}
    both = search(tenant=tenant, kb_ids=[kb1.pk, kb2.pk], query=QUERY, k=10)
    assert {h.document_id for h in both.hits} == {d1.pk, d2.pk, d3.pk}
    filtered = search(tenant=tenant, kb_ids=[kb1.pk, kb2.pk], query=QUERY, k=10, filters={"document_ids": [d2.pk]})
    assert {h.document_id for h in filtered.hits} == {d2.pk}
    with pytest.raises(SearchError):
        search(tenant=tenant, kb_ids=[kb1.pk], query=QUERY, filters={"owner": 1})


def test_modes_and_sides(tenant_a):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant)
    make_indexed_document(tenant, kb, ["Invoices are paid within 30 days.", "Travel is booked in the portal."])
    bm25 = search(tenant=tenant, kb_ids=[kb.pk], query="invoices paid", k=5, options={"mode": "bm25"})
    assert [h.text for h in bm25.hits] == ["Invoices are paid within 30 days."]  # only what BM25 matched
    assert bm25.hits[0].dense_score is None and bm25.hits[0].bm25_rank == 1
    dense = search(tenant=tenant, kb_ids=[kb.pk], query="invoices paid", k=5, options={"mode": "dense"})
    assert len(dense.hits) == 2 and all(h.bm25_rank is None for h in dense.hits)
    assert all(-1.0 <= h.dense_score <= 1.0 for h in dense.hits)
    with pytest.raises(SearchError):
        search(tenant=tenant, kb_ids=[kb.pk], query="   ")
    with pytest.raises(SearchError):
        search(tenant=tenant, kb_ids=[kb.pk], query="x", options={"mode": "magic"})


def test_neighbouring_chunks_and_duplicates(tenant_a):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant)
    doc = make_indexed_document(tenant, kb, ["Intro to the warranty.", "The warranty lasts two years.",
                                             "Claims need the receipt.", "Unrelated closing words."])
    make_indexed_document(tenant, kb, ["The warranty lasts two years."])  # an exact copy in another document
    result = search(tenant=tenant, kb_ids=[kb.pk], query="warranty two years", k=5,
                    options={"neighbors": 1, "mode": "bm25"})
    texts = [h.text for h in result.hits]
    assert texts.count("The warranty lasts two years.") == 1  # the copy is removed
    top = result.hits[0]
    assert top.document_id == doc.pk and top.ordinal == 1
    assert top.context_text == "Intro to the warranty.\nThe warranty lasts two years.\nClaims need the receipt."


class _Down:
    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        from llm.types import ModelUnavailable

        self.calls.append(kwargs)
        raise ModelUnavailable("all servers are down")


def test_expansion_and_compression_model_down_still_answers(tenant_a, monkeypatch):
    from llm import gateway

    down = _Down()
    monkeypatch.setattr(gateway, "chat_sync", down)
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, retrieval={"expansion": True, "expansion_model": "local/llama3.2",
                                           "compression": True, "compression_model": "local/llama3.2"})
    make_indexed_document(tenant, kb, ["Parking is free for visitors on weekends."])
    result = search(tenant=tenant, kb_ids=[kb.pk], query="visitor parking weekend", k=3)
    assert result.hits and result.hits[0].text.startswith("Parking is free")
    assert result.queries == ["visitor parking weekend"]
    assert len(result.warnings) == 2 and all("unavailable" in w for w in result.warnings)
    assert result.hits[0].compressed_text is None
    assert [c["usage"].stage for c in down.calls] == ["expansion", "compression"]


def test_expansion_fuses_alternative_queries(tenant_a, monkeypatch):
    from billing.types import Usage
    from llm import gateway
    from llm.types import ChatResult

    seen = []

    def fake_chat_sync(*, tenant, target, request, usage, **kwargs):
        seen.append((target, usage.stage, usage.user_id))
        return ChatResult(text="1. staff car park opening hours\n- visitor parking weekend\n", usage=Usage())

    monkeypatch.setattr(gateway, "chat_sync", fake_chat_sync)
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, retrieval={"expansion": True, "expansion_model": "local/llama3.2"})
    make_indexed_document(tenant, kb, ["The staff car park opens at 6am."])
    make_indexed_document(tenant, kb, ["Visitor parking is free at weekends."])
    result = search(tenant=tenant, kb_ids=[kb.pk], query="visitor parking weekend", k=5,
                    options={"mode": "bm25"}, usage=search_payer(user_id=tenant_a.owner.pk))
    assert result.queries == ["visitor parking weekend", "staff car park opening hours"]  # duplicates dropped
    assert {h.text for h in result.hits} == {"The staff car park opens at 6am.", "Visitor parking is free at weekends."}
    assert seen == [("local/llama3.2", "expansion", tenant_a.owner.pk)]
    assert not result.warnings


def test_every_model_call_of_a_search_is_billed_to_its_one_payer(tenant_a, monkeypatch):
    from billing.types import Stage, Usage, UsageContext
    from llm import gateway
    from llm.types import ChatResult, EmbedResult

    calls = []

    def fake_chat_sync(*, tenant, target, request, usage, **kwargs):
        calls.append(usage)
        return ChatResult(text="staff car park" if usage.stage == "expansion" else "NONE", usage=Usage())

    def fake_embed_sync(*, tenant, target, texts, usage, **kwargs):
        calls.append(usage)
        return EmbedResult(vectors=[[1.0] + [0.0] * 511 for _ in texts], usage=Usage())

    monkeypatch.setattr(gateway, "chat_sync", fake_chat_sync)
    monkeypatch.setattr(gateway, "embed_sync", fake_embed_sync)
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, model="gateway:fake/fake-embed@512", retrieval={
        "expansion": True, "expansion_model": "fake/fake", "compression": True, "compression_model": "fake/fake"})
    make_indexed_document(tenant, kb, ["Visitor parking is free at weekends."])
    payer = UsageContext(stage=Stage.SEARCH, idempotency_key="msg:7:v1:search", user_id=tenant_a.owner.pk,
                         message_id=7)
    result = search(tenant=tenant, kb_ids=[kb.pk], query="visitor parking weekend", k=3, usage=payer)
    assert result.queries == ["visitor parking weekend", "staff car park"] and len(result.hits) == 1
    # Each call under its own stage and a key derived from the payer's: a retried answer derives the same keys.
    assert [(u.stage, u.idempotency_key) for u in calls] == [
        ("expansion", "msg:7:v1:search:expansion"),
        ("embedding", "msg:7:v1:search:embedding:0:0"),
        ("embedding", "msg:7:v1:search:embedding:1:0"),
        ("compression", f"msg:7:v1:search:compression:{result.hits[0].chunk_id}"),
    ]
    assert all((u.user_id, u.message_id) == (tenant_a.owner.pk, 7) for u in calls)


def test_compression_keeps_only_verbatim_sentences(tenant_a, monkeypatch):
    from billing.types import Usage
    from llm import gateway
    from llm.types import ChatResult

    monkeypatch.setattr(gateway, "chat_sync", lambda **kw: ChatResult(
        text="Visitors park free at weekends. Also, invented text.", usage=Usage()))
    text = llm_steps.compress(tenant=tenant_a.tenant, query="parking",
                              text="Opening hours vary. Visitors park free at weekends. Staff park in lot B.",
                              model="local/x", usage=search_payer())
    assert text == "Visitors park free at weekends."


def test_no_expansion_model_configured_is_a_warning(tenant_a, settings):
    settings.SEARCH_LLM_MODEL = ""
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, retrieval={"expansion": True})
    make_indexed_document(tenant, kb, ["Badges are collected at reception."])
    result = search(tenant=tenant, kb_ids=[kb.pk], query="badges reception", k=3)
    assert result.hits and result.warnings


def test_embedding_model_down_falls_back_to_keywords(tenant_a):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, model="st:/nonexistent/model", dim=384)
    make_indexed_document(tenant, kb, ["Lockers are on the second floor."])
    result = search(tenant=tenant, kb_ids=[kb.pk], query="lockers floor", k=3)
    assert [h.text for h in result.hits] == ["Lockers are on the second floor."]
    assert result.warnings and result.hits[0].dense_rank is None


def test_unknown_kbs_give_nothing(tenant_a):
    with tenant_scope(tenant_a.tenant):
        result = search(tenant=tenant_a.tenant, kb_ids=[987654], query="anything")
    assert result.hits == []


def test_bm25_parameters_given_for_one_call_are_used(tenant_a):
    from knowledge.search.bm25 import KbParams, bm25_search

    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, retrieval={"k1": 1.2, "b": 0.75})
    make_indexed_document(tenant, kb, ["refund refund refund policy for long documents with many words",
                                       "refund window", "shipping costs"], title="Policy")
    stored = search(tenant=tenant, kb_ids=[kb.pk], query="refund", k=3, options={"mode": "bm25"})
    custom = search(tenant=tenant, kb_ids=[kb.pk], query="refund", k=3, options={"mode": "bm25", "k1": 0.3, "b": 0.1})
    with tenant_scope(tenant):
        expected = dict(bm25_search(tenant=tenant, kbs=[KbParams(kb.pk, kb.language, 0.3, 0.1, 0.25)],
                                    query="refund", limit=3))
    assert {h.chunk_id: h.bm25_score for h in custom.hits} == pytest.approx(expected)
    assert [h.bm25_score for h in custom.hits] != pytest.approx([h.bm25_score for h in stored.hits])


@pytest.mark.django_db(transaction=True)
def test_hybrid_sides_run_side_by_side_with_the_same_result(tenant_a, tenant_b, query_vector, monkeypatch, settings):
    """Outside a transaction the dense side runs on the second connection, in the caller's tenant scope."""
    from knowledge.search import parallel

    kb = make_search_kb(tenant_a.tenant)
    make_indexed_document(tenant_a.tenant, kb, ["Our refund window is 14 days.", "Shipping is free."],
                          title="A policy")
    kb_b = make_search_kb(tenant_b.tenant)
    make_indexed_document(tenant_b.tenant, kb_b, [QUERY], vectors=[query_vector], title="B secret")
    submitted = []
    real_submit = parallel.submit
    monkeypatch.setattr(parallel, "submit", lambda fn: submitted.append(fn) or real_submit(fn))
    try:
        together = search(tenant=tenant_a.tenant, kb_ids=[kb.pk, kb_b.pk], query=QUERY, k=5)
    finally:
        parallel.shutdown()  # its connection would keep the test database from being dropped
    assert len(submitted) == 1
    settings.SEARCH_SIDES_IN_PARALLEL = False
    in_turn = search(tenant=tenant_a.tenant, kb_ids=[kb.pk, kb_b.pk], query=QUERY, k=5)
    assert len(submitted) == 1
    assert [(h.chunk_id, h.bm25_score, h.dense_score) for h in together.hits] == \
        [(h.chunk_id, h.bm25_score, h.dense_score) for h in in_turn.hits]
    assert {h.kb_id for h in together.hits} == {kb.pk}  # the thread searched as tenant A only
    assert all(h.dense_score is not None for h in together.hits)
