"""BM25 in PostgreSQL equals rank_bm25.BM25Okapi on the same tokenised corpus (to 1e-6), through index
changes, with the negative-idf epsilon floor, per-KB statistics and custom k1/b."""

import pytest
from rank_bm25 import BM25Okapi

from accounts.tenancy import tenant_scope
from knowledge.models import Chunk
from knowledge.search.analysis import analyzer_for
from knowledge.search.bm25 import KbParams, bm25_search
from knowledge.search.models import IndexStats, PostingBlock, TermStat
from knowledge.search.postings import unpack
from knowledge.search.services import (
    index_rebuild_kb,
    index_text,
    postings_delete_document,
    postings_index_document,
)
from tests.factories.search import make_indexed_document, make_search_kb

# "report" is in more than half of the chunks: its idf is negative and rank-bm25 floors it at
# epsilon * mean idf. Korean text exercises morphemes + bigrams, the code "AX-200" the alphanumeric path.
DOCS = [
    ("Quarterly report", ["The quarterly report covers revenue and costs.", "Revenue grew in the report period."]),
    ("분기 보고서", ["분기 보고서는 매출과 비용을 다룹니다. report", "매출은 보고 기간에 증가했습니다. report"]),
    ("Router manual", ["Reset the AX-200 router by holding the button.", "The AX-200 report light blinks twice."]),
    ("Travel policy", ["Employees book travel through the portal. report", "Hotel costs are refunded monthly."]),
    ("Security", ["Passwords must be rotated every 90 days.", "Report phishing to the security team."]),
]
QUERIES = ["revenue report", "보고서 매출", "AX-200 reset", "report report costs", "hotel refund policy",
           "비용 report", "nothing-matches-this"]


def _indexed_chunks(kb) -> set[int]:
    """Every chunk id in the KB's posting blocks."""
    return {int(cid) for block in PostingBlock.objects.filter(kb=kb)
            for cid in unpack(block.first_chunk, block.size, bytes(block.data)).ids}


def _oracle(tenant, kb, **params):
    """rank_bm25 over the KB's chunks, tokenised exactly as the index does."""
    analyzer = analyzer_for(kb.language)
    with tenant_scope(tenant):
        chunks = list(Chunk.objects.filter(kb=kb).select_related("document").order_by("pk"))
    corpus = [analyzer.tokens(index_text(title=c.document.title, heading_path=c.heading_path, text=c.text))
              for c in chunks]
    return BM25Okapi(corpus, **params), [c.pk for c in chunks], corpus, analyzer


def _assert_parity(tenant, kb, k1=1.5, b=0.75, epsilon=0.25):
    oracle, ids, corpus, analyzer = _oracle(tenant, kb, k1=k1, b=b, epsilon=epsilon)
    checked = 0
    for query in QUERIES:
        tokens = analyzer.tokens(query)
        expected = dict(zip(ids, oracle.get_scores(tokens), strict=True))
        matched = {cid for cid, doc in zip(ids, corpus, strict=True) if set(tokens) & set(doc)}
        with tenant_scope(tenant):
            got = dict(bm25_search(tenant=tenant, kbs=[KbParams(kb.pk, kb.language, k1, b, epsilon)], query=query,
                                   limit=1000))
        assert set(got) == matched, query
        for cid, score in got.items():
            assert score == pytest.approx(expected[cid], abs=1e-6), (query, cid)
            checked += 1
        ranked = [cid for cid, _s in sorted(got.items(), key=lambda kv: (-kv[1], kv[0]))]
        assert ranked == sorted(matched, key=lambda c: (-expected[c], c))
    assert checked > 20


@pytest.fixture
def corpus_kb(tenant_a):
    kb = make_search_kb(tenant_a.tenant)
    docs = [make_indexed_document(tenant_a.tenant, kb, texts, title=title) for title, texts in DOCS]
    return tenant_a.tenant, kb, docs


def test_scores_equal_rank_bm25(corpus_kb):
    tenant, kb, _docs = corpus_kb
    _assert_parity(tenant, kb)
    _assert_parity(tenant, kb, k1=0.9, b=0.4)


def test_negative_idf_uses_the_epsilon_floor(corpus_kb):
    tenant, kb, _docs = corpus_kb
    oracle, _ids, _corpus, analyzer = _oracle(tenant, kb, k1=1.5, b=0.75, epsilon=0.25)
    term = analyzer.tokens("report")[0]
    assert oracle.idf[term] == pytest.approx(0.25 * oracle.average_idf)  # the case under test really occurs
    with tenant_scope(tenant):
        got = dict(bm25_search(tenant=tenant, kbs=[KbParams(kb.pk, kb.language, 1.5, 0.75, 0.25)], query="report",
                               limit=100))
        assert got  # every chunk with "report" scores epsilon * mean idf * its tf part (parity test checks values)
        stats = IndexStats.objects.get(kb=kb)
    assert stats.average_idf == pytest.approx(oracle.average_idf)  # cached after the first such query


def test_parity_holds_after_delete_and_reindex(corpus_kb):
    tenant, kb, docs = corpus_kb
    with tenant_scope(tenant):
        removed = set(Chunk.objects.filter(document=docs[0]).values_list("pk", flat=True))
    postings_delete_document(tenant=tenant, document_id=docs[0].pk)
    with tenant_scope(tenant):
        Chunk.objects.filter(document=docs[0]).delete()
        assert removed and not removed & _indexed_chunks(kb)
    _assert_parity(tenant, kb)
    # Re-indexing an unchanged document is idempotent: statistics do not drift.
    postings_index_document(tenant=tenant, document=docs[1])
    postings_index_document(tenant=tenant, document=docs[1])
    _assert_parity(tenant, kb)
    with tenant_scope(tenant):
        stats = IndexStats.objects.get(kb=kb)
        assert stats.chunk_count == Chunk.objects.filter(kb=kb).count()
        assert not TermStat.objects.filter(kb=kb, df__lte=0).exists()


def test_rebuild_gives_the_same_index(corpus_kb):
    tenant, kb, _docs = corpus_kb
    with tenant_scope(tenant):
        before = sorted(TermStat.objects.filter(kb=kb).values_list("term", "df"))
    assert index_rebuild_kb(tenant=tenant, kb=kb) == len(DOCS)
    with tenant_scope(tenant):
        assert sorted(TermStat.objects.filter(kb=kb).values_list("term", "df")) == before
    _assert_parity(tenant, kb)


def test_a_multi_kb_search_scores_with_the_kbs_statistics_taken_together(tenant_a):
    tenant = tenant_a.tenant
    kb1, kb2 = make_search_kb(tenant), make_search_kb(tenant)
    make_indexed_document(tenant, kb1, ["apple banana", "apple cherry", "apple"], title="fruit")
    make_indexed_document(tenant, kb2, ["apple pie recipe", "bread recipe"], title="baking")
    params = [KbParams(kb.pk, "auto", 1.5, 0.75, 0.25) for kb in (kb1, kb2)]
    for kb, kb_params in zip((kb1, kb2), params, strict=True):  # alone, each KB has its own statistics
        oracle, ids, _corpus, analyzer = _oracle(tenant, kb, k1=1.5, b=0.75, epsilon=0.25)
        with tenant_scope(tenant):
            got = dict(bm25_search(tenant=tenant, kbs=[kb_params], query="apple", limit=50))
        expected = dict(zip(ids, oracle.get_scores(analyzer.tokens("apple")), strict=True))
        for cid, score in got.items():
            assert score == pytest.approx(expected[cid], abs=1e-6)
    # Together, chunks are scored as if both KBs were one index (chunk count, average length, document frequency).
    _first, ids1, corpus1, analyzer = _oracle(tenant, kb1)
    _second, ids2, corpus2, _ = _oracle(tenant, kb2)
    union = BM25Okapi(corpus1 + corpus2, k1=1.5, b=0.75, epsilon=0.25)
    query = "banana recipe"  # positive idf over the union: no epsilon floor, so the scores must match exactly
    expected = dict(zip(ids1 + ids2, union.get_scores(analyzer.tokens(query)), strict=True))
    with tenant_scope(tenant):
        both = dict(bm25_search(tenant=tenant, kbs=params, query=query, limit=50))
        single1 = dict(bm25_search(tenant=tenant, kbs=params[:1], query=query, limit=50))
    assert set(both) == {ids1[0], *ids2}
    for cid, score in both.items():
        assert score == pytest.approx(expected[cid], abs=1e-6)
    assert both[ids1[0]] != pytest.approx(single1[ids1[0]], abs=1e-3)  # not the KB's own statistics


def test_real_eval_passages_parity(tenant_a):
    """The analyser on real Korean and English passages from ../shared/eval (skipped when absent)."""
    from pathlib import Path

    from django.conf import settings

    from knowledge.search.beir import load_dataset

    root = Path(settings.BASE_DIR).parent / "shared" / "eval"
    folders = [root / "ko_allganize_rag_subset", root / "en_scifact_beir_test"]
    if not all((f / "corpus.jsonl").exists() for f in folders):
        pytest.skip("../shared/eval is not present")
    tenant = tenant_a.tenant
    for folder in folders:
        dataset = load_dataset(folder)
        kb = make_search_kb(tenant, language="ko" if folder.name.startswith("ko") else "en")
        for passage in dataset.corpus[:40]:
            make_indexed_document(tenant, kb, [passage.text], title=passage.title)
        oracle, ids, _corpus, analyzer = _oracle(tenant, kb, k1=1.2, b=0.75, epsilon=0.25)
        for query in list(dataset.queries.values())[:10]:
            expected = dict(zip(ids, oracle.get_scores(analyzer.tokens(query)), strict=True))
            with tenant_scope(tenant):
                got = bm25_search(tenant=tenant, kbs=[KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)], query=query,
                                  limit=100)
            for cid, score in got:
                assert score == pytest.approx(expected[cid], abs=1e-6)


# ---------------------------------------------------------------- top-k pruning (MaxScore) is exact

def _zipf_corpus(seed: int, docs: int, chunks_per_doc: int) -> list[list[str]]:
    import random

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(words))]
    return [[" ".join(rng.choices(words, weights, k=rng.randint(5, 40))) for _ in range(chunks_per_doc)]
            for _ in range(docs)]


@pytest.fixture
def zipf_kb(tenant_a, monkeypatch):
    """A corpus with very common, common and rare words; pruning forced on for any size."""
    from knowledge.search import bm25

    monkeypatch.setattr(bm25, "PRUNE_ABOVE_POSTINGS", 0)
    monkeypatch.setattr(bm25, "THRESHOLD_POSTINGS", 40)
    monkeypatch.setattr(bm25, "COMPLETION_COST", 0)  # always complete by lookups (the fallback is tested apart)
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, language="en")
    docs = [make_indexed_document(tenant, kb, texts, title="") for texts in _zipf_corpus(3, 30, 8)]
    return tenant, kb, docs


def _queries(seed: int, n: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(f"w{int(rng.paretovariate(0.6)) % 300}" for _ in range(rng.randint(2, 6))) for _ in range(n)]


def _assert_pruned_equals_full(tenant, kb, queries, limits=(3, 10, 25)) -> int:
    """Pruned top-k equals scoring every posting; returns how many searches really pruned."""
    params = [KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)]
    pruned = 0
    with tenant_scope(tenant):
        for query in queries:
            for limit in limits:
                trace: dict = {}
                got = bm25_search(tenant=tenant, kbs=params, query=query, limit=limit, trace=trace)
                full = bm25_search(tenant=tenant, kbs=params, query=query, limit=limit, prune=False)
                assert [cid for cid, _s in got] == [cid for cid, _s in full], (query, limit, trace)
                assert [s for _c, s in got] == pytest.approx([s for _c, s in full], abs=1e-9)
                if trace.get("pruned") and trace["scanned_postings"] < trace["postings"]:
                    pruned += 1
    return pruned


def test_pruned_top_k_equals_full_scoring_and_rank_bm25(zipf_kb):
    tenant, kb, _docs = zipf_kb
    queries = _queries(11, 40)
    pruned = _assert_pruned_equals_full(tenant, kb, queries)
    assert pruned >= 20  # the pruning path is really taken (and skips postings) for most searches
    oracle, ids, _corpus, analyzer = _oracle(tenant, kb, k1=1.2, b=0.75, epsilon=0.25)
    with tenant_scope(tenant):
        for query in queries[:10]:
            scores = dict(zip(ids, oracle.get_scores(analyzer.tokens(query)), strict=True))
            got = bm25_search(tenant=tenant, kbs=[KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)], query=query,
                              limit=10)
            for cid, score in got:
                assert score == pytest.approx(scores[cid], abs=1e-6)
            # nothing left out scores above the 10th result
            assert max((s for cid, s in scores.items() if cid not in dict(got)), default=0) <= got[-1][1] + 1e-9


def test_pruning_stays_exact_after_deletes_and_with_unknown_bounds(zipf_kb):
    tenant, kb, docs = zipf_kb
    for doc in docs[:6]:  # the removed chunks may have set the terms' bounds: bounds stay, maybe loose
        postings_delete_document(tenant=tenant, document_id=doc.pk)
        with tenant_scope(tenant):
            Chunk.objects.filter(document=doc).delete()
    queries = _queries(12, 25)
    assert _assert_pruned_equals_full(tenant, kb, queries) > 0
    with tenant_scope(tenant):  # an index built before bounds were kept
        TermStat.objects.filter(kb=kb).update(max_tf=None, min_length=None)
    assert _assert_pruned_equals_full(tenant, kb, queries) > 0


def test_term_bounds_cover_every_posting(zipf_kb):
    tenant, kb, _docs = zipf_kb
    with tenant_scope(tenant):
        real: dict[str, tuple[int, int]] = {}
        for block in PostingBlock.objects.filter(kb=kb):
            postings = unpack(block.first_chunk, block.size, bytes(block.data))
            top, low = real.get(block.term, (0, 10**9))
            real[block.term] = (max(top, *postings.tfs), min(low, *postings.lengths))
        stats = {t.term: (t.max_tf, t.min_length) for t in TermStat.objects.filter(kb=kb)}
    assert stats == real


def test_all_common_words_fall_back_to_one_scan_with_the_same_result(zipf_kb, monkeypatch):
    from knowledge.search import bm25

    tenant, kb, _docs = zipf_kb
    monkeypatch.setattr(bm25, "COMPLETION_COST", 10**6)  # lookups priced out: every pruned search falls back
    params = [KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)]
    fallbacks = 0
    with tenant_scope(tenant):
        for query in _queries(13, 20):
            trace: dict = {}
            got = bm25_search(tenant=tenant, kbs=params, query=query, limit=10, trace=trace)
            full = bm25_search(tenant=tenant, kbs=params, query=query, limit=10, prune=False)
            assert [cid for cid, _s in got] == [cid for cid, _s in full], query
            assert [s for _c, s in got] == pytest.approx([s for _c, s in full], abs=1e-9)
            fallbacks += trace.get("fallback") == "common-words"
    assert fallbacks >= 5


def test_chunk_ids_spread_wide_aggregate_by_sorting_with_the_same_result(zipf_kb, monkeypatch):
    from knowledge.search import bm25

    tenant, kb, _docs = zipf_kb
    params = [KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)]
    with tenant_scope(tenant):
        dense = {q: bm25_search(tenant=tenant, kbs=params, query=q, limit=25, prune=False) for q in _queries(14, 15)}
        monkeypatch.setattr(bm25, "DENSE_SPAN", 0)  # never sum into an array indexed by chunk id
        for query, expected in dense.items():
            got = bm25_search(tenant=tenant, kbs=params, query=query, limit=25, prune=False)
            assert [cid for cid, _s in got] == [cid for cid, _s in expected], query
            assert [s for _c, s in got] == pytest.approx([s for _c, s in expected], abs=1e-9)


def test_a_document_frequency_read_above_the_chunk_count_does_not_fail_the_search(tenant_a):
    """Statistics are read in separate statements: a document indexed in between can leave df above n."""
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant)
    make_indexed_document(tenant, kb, ["apple banana", "cherry"], title="fruit")
    with tenant_scope(tenant):
        TermStat.objects.filter(kb=kb, term="apple").update(df=5)
        hits = bm25_search(tenant=tenant, kbs=[KbParams(kb.pk, "auto", 1.5, 0.75, 0.25)], query="apple banana",
                           limit=5)
        first = Chunk.objects.get(kb=kb, ordinal=0)
    assert [cid for cid, _ in hits] == [first.pk]


def test_many_surviving_candidates_add_the_other_terms_by_aggregation_with_the_same_result(zipf_kb, monkeypatch):
    from knowledge.search import bm25

    tenant, kb, _docs = zipf_kb
    monkeypatch.setattr(bm25, "_pruning_can_pay", lambda terms, scan: True)
    monkeypatch.setattr(bm25, "COMPLETION_COST", 10**6)  # binary searches priced out after the threshold
    params = [KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)]
    taken = 0
    with tenant_scope(tenant):
        for query in _queries(15, 20):
            trace: dict = {}
            got = bm25_search(tenant=tenant, kbs=params, query=query, limit=10, trace=trace)
            full = bm25_search(tenant=tenant, kbs=params, query=query, limit=10, prune=False)
            assert [cid for cid, _s in got] == [cid for cid, _s in full], query
            assert [s for _c, s in got] == pytest.approx([s for _c, s in full], abs=1e-9)
            taken += trace.get("fallback") == "many-candidates"
    assert taken >= 5
