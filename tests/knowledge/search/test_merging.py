"""Posting blocks: documents indexed one by one leave fresh blocks; merging folds them into the layout a bulk
rebuild writes, without changing any search result, and loses nothing when ingestion or searches run at the
same time."""

import random
import threading
import time

import numpy as np
import pytest
from django.db import connections
from rank_bm25 import BM25Okapi

from accounts.tenancy import tenant_scope
from knowledge.models import Chunk, Document
from knowledge.search import merging, postings, tasks
from knowledge.search.analysis import analyzer_for
from knowledge.search.bm25 import KbParams, bm25_search
from knowledge.search.models import IndexStats, PostingBlock
from knowledge.search.postings import Postings, pack, unpack
from knowledge.search.services import (
    index_rebuild_kb,
    index_text,
    postings_delete_document,
    postings_index_document,
    postings_index_documents,
)
from tests.factories.search import make_indexed_document, make_search_kb, random_vector
from tests.support.threads import in_background

WORDS = [f"w{i}" for i in range(60)]
QUERIES = ["w0 w1", "w2 w7 w30", "w0 w0 w5", "w45 w1", "w59", "w3 w4 w5 w6 w8"]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 4 postings, so tails, full blocks and cuts all occur in a small KB."""
    monkeypatch.setattr(postings, "BLOCK_SIZE", 4)


def _texts(rng: random.Random, n: int) -> list[str]:
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    return [" ".join(rng.choices(WORDS, weights, k=rng.randint(3, 12))) for _ in range(n)]


def _layout(kb) -> list[tuple]:
    return sorted(PostingBlock.objects.filter(kb=kb).values_list(
        "term", "first_chunk", "last_chunk", "size", "max_tf", "min_length", "fresh", "data"))


def _results(tenant, kb) -> dict[str, list[tuple[int, float]]]:
    params = [KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)]
    with tenant_scope(tenant):
        return {q: bm25_search(tenant=tenant, kbs=params, query=q, limit=1000) for q in QUERIES}


def _assert_same_results(before: dict, after: dict) -> None:
    for query in QUERIES:
        assert [cid for cid, _s in after[query]] == [cid for cid, _s in before[query]], query
        assert [s for _c, s in after[query]] == pytest.approx([s for _c, s in before[query]], abs=1e-12)


def _assert_rank_bm25_parity(tenant, kb) -> None:
    analyzer = analyzer_for(kb.language)
    with tenant_scope(tenant):
        chunks = list(Chunk.objects.filter(kb=kb).select_related("document").order_by("pk"))
    corpus = [analyzer.tokens(index_text(title=c.document.title, heading_path=c.heading_path, text=c.text))
              for c in chunks]
    oracle = BM25Okapi(corpus, k1=1.2, b=0.75, epsilon=0.25)
    for query, got in _results(tenant, kb).items():
        tokens = analyzer.tokens(query)
        expected = dict(zip([c.pk for c in chunks], oracle.get_scores(tokens), strict=True))
        matched = {c.pk for c, doc in zip(chunks, corpus, strict=True) if set(tokens) & set(doc)}
        assert {cid for cid, _s in got} == matched, query
        for cid, score in got:
            assert score == pytest.approx(expected[cid], abs=1e-6), (query, cid)


def _fresh(kb) -> int:
    return PostingBlock.objects.filter(kb=kb, fresh=True).count()


def test_blocks_round_trip_in_every_width():
    typical = Postings(np.arange(100, 1124), np.ones(1024, dtype=np.int64), np.full(1024, 300))
    wide = [  # gaps over 65,535 / ids over 2^32 apart, tfs over 255 / 65,535, lengths over 65,535 / 2^32
        Postings(np.array([5, 9, 70_000]), np.array([1, 300, 2]), np.array([10, 4, 65_535])),
        Postings(np.array([7, 2**33]), np.array([70_000, 1]), np.array([70_000, 2])),
        Postings(np.array([2**40]), np.array([2**40]), np.array([2**40])),
    ]
    for original in [typical, *wide]:
        block = pack(original)
        assert (block.first_chunk, block.last_chunk, block.size) == (original.ids[0], original.ids[-1],
                                                                     len(original))
        assert (block.max_tf, block.min_length) == (original.tfs.max(), original.lengths.min())
        back = unpack(block.first_chunk, block.size, block.data)
        for name in ("ids", "tfs", "lengths"):
            assert getattr(back, name).tolist() == getattr(original, name).tolist()
    assert len(pack(typical).data) == 1 + 2 * 1023 + 1024 + 2 * 1024  # 5 bytes a posting


def test_one_by_one_ingestion_merges_into_the_bulk_layout(tenant_a, small_blocks):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, language="en")
    rng = random.Random(5)
    for _ in range(12):
        make_indexed_document(tenant, kb, _texts(rng, 5), title="")
    with tenant_scope(tenant):
        assert _fresh(kb) > 40  # one fresh block per document and term
        assert IndexStats.objects.get(kb=kb).fresh_documents == 12
    before = _results(tenant, kb)

    assert merging.postings_merge_kb(tenant=tenant, kb_id=kb.pk) > 0
    with tenant_scope(tenant):
        merged = _layout(kb)
        assert _fresh(kb) == 0
        assert IndexStats.objects.get(kb=kb).fresh_documents == 0
        by_term: dict[str, list[int]] = {}
        for term, _first, _last, size, *_rest in merged:
            by_term.setdefault(term, []).append(size)
        assert all(all(size == 4 for size in sizes[:-1]) for sizes in by_term.values())  # canonical: full blocks
        assert any(len(sizes) > 2 for sizes in by_term.values())
    _assert_same_results(before, _results(tenant, kb))
    assert merging.postings_merge_kb(tenant=tenant, kb_id=kb.pk) == 0  # idempotent: nothing is fresh any more

    index_rebuild_kb(tenant=tenant, kb=kb)
    with tenant_scope(tenant):
        assert _layout(kb) == merged
    _assert_rank_bm25_parity(tenant, kb)


def test_interleaved_chunk_ids_and_later_documents_still_merge_into_the_bulk_layout(tenant_a, small_blocks):
    """Two documents embedded at the same time have interleaved chunk ids; one indexed after a merge lands
    inside blocks already written, and a merge after more documents rewrites only from there."""
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, language="en")
    rng = random.Random(8)
    with tenant_scope(tenant):
        docs = [Document.objects.create(tenant=tenant, kb=kb, title="", filename=f"d{i}.txt", sha256=f"il{i}",
                                        status=Document.Status.READY) for i in range(2)]
        for ordinal in range(6):
            for doc in docs:
                Chunk.objects.create(tenant=tenant, kb=kb, document=doc, ordinal=ordinal, text=_texts(rng, 1)[0],
                                     embedding=random_vector(kb.embedding_dim, seed=ordinal), embedding_dim=kb.embedding_dim)
    postings_index_document(tenant=tenant, document=docs[0])
    merging.postings_merge_kb(tenant=tenant, kb_id=kb.pk)
    postings_index_document(tenant=tenant, document=docs[1])
    for _ in range(3):
        make_indexed_document(tenant, kb, _texts(rng, 4), title="")
    before = _results(tenant, kb)
    merging.postings_merge_kb(tenant=tenant, kb_id=kb.pk)
    _assert_same_results(before, _results(tenant, kb))
    with tenant_scope(tenant):
        merged = _layout(kb)
    index_rebuild_kb(tenant=tenant, kb=kb)
    with tenant_scope(tenant):
        assert _layout(kb) == merged


def test_bulk_indexing_merges_as_it_goes(tenant_a, small_blocks):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, language="en")
    rng = random.Random(9)
    docs = [make_indexed_document(tenant, kb, _texts(rng, 4), title="", index=False) for _ in range(9)]
    postings_index_documents(tenant=tenant, kb=kb, document_ids=[d.pk for d in docs], batch=4)
    with tenant_scope(tenant):
        assert _fresh(kb) == 0 and IndexStats.objects.get(kb=kb).fresh_documents == 0
        bulk = _layout(kb)
    index_rebuild_kb(tenant=tenant, kb=kb)
    with tenant_scope(tenant):
        assert _layout(kb) == bulk
    _assert_rank_bm25_parity(tenant, kb)


def test_removing_a_document_after_a_merge_rewrites_only_its_postings(tenant_a, small_blocks):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, language="en")
    rng = random.Random(6)
    docs = [make_indexed_document(tenant, kb, _texts(rng, 5), title="") for _ in range(8)]
    merging.postings_merge_kb(tenant=tenant, kb_id=kb.pk)
    with tenant_scope(tenant):
        gone = set(Chunk.objects.filter(document=docs[3]).values_list("pk", flat=True))
        untouched = {row for row in _layout(kb)}
    postings_delete_document(tenant=tenant, document_id=docs[3].pk)
    with tenant_scope(tenant):
        Chunk.objects.filter(document=docs[3]).delete()
        after = _layout(kb)
        stored = {int(c) for row in after for c in unpack(row[1], row[3], bytes(row[7])).ids}
    assert gone and not gone & stored
    assert len(untouched & set(after)) > len(after) // 2  # blocks without its chunks were left as they were
    _assert_rank_bm25_parity(tenant, kb)
    postings_index_document(tenant=tenant, document=docs[4])  # re-indexing a merged document
    merging.postings_merge_kb(tenant=tenant, kb_id=kb.pk)
    _assert_rank_bm25_parity(tenant, kb)


def test_a_merge_is_requested_every_n_documents_after_commit(tenant_a, settings, monkeypatch,
                                                             django_capture_on_commit_callbacks):
    settings.SEARCH_MERGE_AFTER_DOCUMENTS = 3
    sent = []
    monkeypatch.setattr(tasks.merge_postings, "apply_async", lambda **kw: sent.append(kw))
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, language="en")
    rng = random.Random(2)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(7):
            make_indexed_document(tenant, kb, _texts(rng, 2), title="")
    assert sent == [{"kwargs": {"kb_id": kb.pk, "tenant_id": tenant.pk}, "queue": settings.INGEST_QUEUE}] * 2
    assert tasks.merge_postings.run(kb_id=kb.pk, tenant_id=tenant.pk) > 0  # the task merges
    with tenant_scope(tenant):
        assert _fresh(kb) == 0
    assert tasks.merge_postings.run(kb_id=kb.pk, tenant_id=10**9) == 0  # a deleted tenant's message is dropped


def test_the_sweep_queues_kbs_whose_fresh_blocks_wait(tenant_a, tenant_b, settings, monkeypatch,
                                                     django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    sent = []
    monkeypatch.setattr(tasks.merge_postings, "apply_async", lambda **kw: sent.append(kw["kwargs"]))
    rng = random.Random(3)
    quiet, busy, merged = (make_search_kb(tenant_a.tenant), make_search_kb(tenant_b.tenant),
                           make_search_kb(tenant_a.tenant))
    for kb, tenant in ((quiet, tenant_a.tenant), (busy, tenant_b.tenant), (merged, tenant_a.tenant)):
        make_indexed_document(tenant, kb, _texts(rng, 2), title="")
    merging.postings_merge_kb(tenant=tenant_a.tenant, kb_id=merged.pk)
    long_ago = timezone.now() - timedelta(seconds=settings.SEARCH_MERGE_SWEEP_SECONDS + 1)
    for kb, tenant in ((quiet, tenant_a.tenant), (merged, tenant_a.tenant)):
        with tenant_scope(tenant):
            IndexStats.objects.filter(kb=kb).update(indexed_at=long_ago)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.merge_sweep.run() == 1
    assert sent == [{"kb_id": quiet.pk, "tenant_id": tenant_a.tenant.pk}]


@pytest.mark.django_db(transaction=True)
def test_merge_concurrent_with_ingestion_and_search_loses_nothing(tenant_a, small_blocks, monkeypatch):
    """A merge step holds the KB's index lock: a document indexed meanwhile waits and lands as fresh blocks
    (merged by the same call's next steps or the next call); a search meanwhile sees the last committed
    blocks, with the same results."""
    monkeypatch.setattr(merging, "MERGE_TERMS_PER_TRANSACTION", 5)
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, language="en")
    rng = random.Random(4)
    for _ in range(6):
        make_indexed_document(tenant, kb, _texts(rng, 4), title="")
    late = make_indexed_document(tenant, kb, ["zebra quagga " + _texts(rng, 1)[0]], title="", index=False)
    before = _results(tenant, kb)

    inside, release = threading.Event(), threading.Event()
    real_merge_terms = merging.merge_terms

    def slow_merge_terms(cursor, **kwargs):
        written = real_merge_terms(cursor, **kwargs)
        if not inside.is_set():
            inside.set()
            assert release.wait(30)
        return written

    monkeypatch.setattr(merging, "merge_terms", slow_merge_terms)

    def in_thread(fn):
        def run():
            try:
                return fn()
            finally:
                connections.close_all()
        return in_background(run)

    merge_thread, merge_box = in_thread(lambda: merging.postings_merge_kb(tenant=tenant, kb_id=kb.pk))
    assert inside.wait(30)
    index_thread, index_box = in_thread(lambda: postings_index_document(tenant=tenant, document=late))
    time.sleep(0.5)
    assert "result" not in index_box  # waiting for the merge step's lock
    _assert_same_results(before, _results(tenant, kb))  # the search does not wait, and sees a whole state
    release.set()
    for thread in (merge_thread, index_thread):
        thread.join(30)
    assert "error" not in merge_box and "error" not in index_box, (merge_box, index_box)

    params = [KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)]
    with tenant_scope(tenant):
        late_chunks = set(Chunk.objects.filter(document=late).values_list("pk", flat=True))
        assert {cid for cid, _s in bm25_search(tenant=tenant, kbs=params, query="zebra", limit=10)} == late_chunks
    merging.postings_merge_kb(tenant=tenant, kb_id=kb.pk)
    with tenant_scope(tenant):
        assert _fresh(kb) == 0
        merged = _layout(kb)
    _assert_rank_bm25_parity(tenant, kb)
    index_rebuild_kb(tenant=tenant, kb=kb)
    with tenant_scope(tenant):
        assert _layout(kb) == merged
