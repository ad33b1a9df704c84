"""Fusion, MMR and near-duplicate removal against hand-computed expectations (pure functions)."""

import math

import pytest

from knowledge.search.fusion import fuse, mmr, near_duplicates


def test_rrf_credits_only_the_sides_that_matched():
    bm25 = [(1, 9.0), (2, 5.0)]
    dense = [(3, 0.9), (1, 0.8)]
    out = {f.chunk_id: f for f in fuse(bm25, dense, method="rrf", bm25_weight=1.0, dense_weight=0.5, rrf_k=60)}
    assert out[1].score == pytest.approx(1 / 61 + 0.5 / 62)
    assert out[2].score == pytest.approx(1 / 62)  # no dense credit: dense did not return chunk 2
    assert out[3].score == pytest.approx(0.5 / 61)  # no BM25 credit: BM25 did not match chunk 3
    assert (out[3].bm25_rank, out[3].dense_rank) == (None, 1)
    assert [f.chunk_id for f in fuse(bm25, dense, method="rrf", dense_weight=0.5)] == [1, 2, 3]


def test_zscore_fusion_by_hand():
    bm25 = [(1, 6.0), (2, 4.0), (3, 2.0)]  # mean 4, sd sqrt(8/3): z = +1.2247, 0, -1.2247
    dense = [(3, 0.9), (4, 0.5)]  # mean 0.7, sd 0.2: z = +1, -1
    sd = math.sqrt(8 / 3)
    out = {f.chunk_id: f for f in fuse(bm25, dense, method="zscore", bm25_weight=1.0, dense_weight=0.5)}
    assert out[1].score == pytest.approx(2 / sd)
    assert out[2].score == pytest.approx(0.0)
    assert out[3].score == pytest.approx(0.5 * 1.0)  # below-mean BM25 evidence counts as nothing, not negative
    assert out[4].score == pytest.approx(0.0)
    # Equal scores: BM25 rank breaks the tie, then dense rank, then chunk id.
    assert [f.chunk_id for f in fuse(bm25, dense, method="zscore", dense_weight=0.5)] == [1, 3, 2, 4]


def test_a_weak_dense_side_cannot_overturn_a_clear_lexical_winner():
    bm25 = [(1, 20.0)] + [(i, 2.0) for i in range(2, 30)]
    dense = [(i, 0.31 - i * 0.001) for i in range(2, 30)] + [(1, 0.2)]  # flat, and chunk 1 last
    fused = fuse(bm25, dense, method="zscore", dense_weight=0.15)
    assert fused[0].chunk_id == 1


def test_fusion_of_one_side_only_keeps_its_order():
    assert [f.chunk_id for f in fuse([], [(5, 0.9), (6, 0.8), (7, 0.1)], method="zscore")] == [5, 6, 7]
    assert [f.chunk_id for f in fuse([(8, 3.0)], [], method="zscore")] == [8]
    with pytest.raises(ValueError):
        fuse([], [], method="nope")


def test_mmr_by_hand():
    # Relevance (scaled to 0..1): a=1.0, b=0.5, c=0.0; b is a copy of a, c is orthogonal to both.
    vectors = [[1, 0], [1, 0], [0, 1]]
    # lam=0.5: pick a (0.5); then b: 0.25 - 0.5*1 = -0.25, c: 0 - 0 = 0 -> c; then b.
    assert mmr(["a", "b", "c"], [3.0, 2.0, 1.0], vectors, lam=0.5, k=3) == [0, 2, 1]
    # lam=1: relevance only.
    assert mmr(["a", "b", "c"], [3.0, 2.0, 1.0], vectors, lam=1.0, k=2) == [0, 1]
    assert mmr([], [], [], lam=0.5, k=3) == []


def test_mmr_over_kbs_on_models_of_other_sizes_compares_only_like_vectors():
    # a and b from a 2-d KB, c from a 3-d one and d without a vector: only b is like a, and pays for it.
    vectors = [[1, 0], [1, 0], [1, 0, 0], None]
    assert mmr(["a", "b", "c", "d"], [4.0, 3.0, 2.0, 1.0], vectors, lam=0.5, k=4) == [0, 2, 3, 1]


def test_near_duplicates():
    texts = [
        "The refund window is thirty days from the date of purchase for all items.",
        "The  refund window is thirty days from the date of purchase for all items.",  # whitespace only
        "Shipping is free for orders over fifty dollars within the country.",
        "the refund window is thirty days from the date of purchase for all items",  # case/punctuation
    ]
    assert near_duplicates(texts, threshold=0.9) == {1, 3}
    assert near_duplicates(texts[:1] + texts[2:3], threshold=0.9) == set()


def test_exact_duplicates_at_threshold_one():
    texts = [
        "The refund window is thirty days from the date of purchase.",
        "The refund window is thirty days from the date of purchase!",  # same words
        "The refund window is thirty days from the date of delivery.",  # one word differs: kept at 1.0
        "",
        "",  # empty texts are never duplicates of anything
    ]
    assert near_duplicates(texts, threshold=1.0) == {1}
    assert near_duplicates(texts, threshold=0.5) == {1, 2}
