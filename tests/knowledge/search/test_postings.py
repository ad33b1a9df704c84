"""The posting codec: packing many lists at once (what indexing one document does) gives the same blocks, byte
for byte, as cutting and packing each list on its own, whatever widths the ids, tfs and lengths need."""

import numpy as np
import pytest

from knowledge.search import postings
from knowledge.search.postings import Postings, cut, cut_lists


@pytest.mark.parametrize("seed", range(6))
def test_cut_lists_equals_cut_of_each_list(seed):
    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(40):
        n = int(rng.choice([1, 2, 7, postings.BLOCK_SIZE, postings.BLOCK_SIZE + 1, 2 * postings.BLOCK_SIZE + 5]))
        gaps = rng.integers(1, int(rng.choice([4, 70_000, 2**33])), n)  # uint16 gaps, uint32 offsets, int64 ids
        lists.append(Postings(np.cumsum(gaps) + int(rng.integers(1, 10**6)),
                              rng.integers(1, int(rng.choice([9, 300, 70_000])), n),
                              rng.integers(1, int(rng.choice([90, 70_000, 2**33])), n)))
    starts = np.cumsum([0] + [len(p) for p in lists[:-1]])

    owners, blocks = cut_lists(np.concatenate([p.ids for p in lists]), np.concatenate([p.tfs for p in lists]),
                               np.concatenate([p.lengths for p in lists]), starts)

    expected = [(index, block) for index, p in enumerate(lists) for block in cut(p)]
    assert owners == [index for index, _b in expected]
    assert blocks == [block for _i, block in expected]
    assert len({b.data[0] for b in blocks}) > 3  # many width combinations were exercised


def test_cut_lists_of_nothing():
    empty = np.empty(0, np.int64)
    assert cut_lists(empty, empty, empty, empty) == ([], [])
