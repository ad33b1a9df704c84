"""Posting lists of the BM25 index as packed blocks, and the arithmetic on them.

A term's postings in one KB are the chunks that contain it, in chunk-id order, each with the term's frequency
(tf) in the chunk and the chunk's length (analysed tokens). They are stored in blocks of at most BLOCK_SIZE
postings (search_postingblock rows), each packed into one bytea: a format byte, then the chunk ids, the tfs
and the lengths, each as the narrowest array that holds them exactly:

    ids      gaps between consecutive ids as uint16 | offsets from the first id as uint32 | int64
    tfs      uint8 | uint16 | int64
    lengths  uint16 | uint32 | int64

(typically 5 bytes a posting; the first id is the row's first_chunk). Decoding is a few numpy views and a
cumulative sum, so a query reads a term's 50,000 postings as ~50 rows instead of one row per document, and
scores them with vectorised arithmetic instead of per-row SQL.

The canonical layout of a term is its posting list cut every BLOCK_SIZE postings from the start (the last block
may be shorter): what a bulk load or a rebuild writes, and what merging (merging.py) restores after live
ingestion appended small "fresh" blocks, one per document.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psycopg
from django.db import DEFAULT_DB_ALIAS, connections

# 1,536 postings of the usual widths make ~7.7 KB: a full block fits its row in one page (stored inline, see
# migration 0004), and merging or removing a document rewrites little.
BLOCK_SIZE = 1536
# Per field, the array types tried in turn (the format byte holds each field's choice in two bits).
_ID_TYPES = tuple(map(np.dtype, ("<u2", "<u4", "<i8")))  # gaps, offsets from the first id, ids
_TF_TYPES = tuple(map(np.dtype, ("u1", "<u2", "<i8")))
_LENGTH_TYPES = tuple(map(np.dtype, ("<u2", "<u4", "<i8")))


@dataclass
class Postings:
    """Parallel arrays, sorted by chunk id (unique)."""

    ids: np.ndarray  # int64
    tfs: np.ndarray  # unsigned or int64
    lengths: np.ndarray  # unsigned or int64

    @classmethod
    def empty(cls) -> Postings:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))

    @classmethod
    def of(cls, entries: list[tuple[int, int, int]]) -> Postings:
        """From (chunk id, tf, length) triples in any order."""
        array = np.array(sorted(entries), dtype=np.int64).reshape(-1, 3)
        return cls(array[:, 0].copy(), array[:, 1].copy(), array[:, 2].copy())

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: list[Postings]) -> Postings:
        """The union of disjoint posting lists, in chunk-id order."""
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        ids = np.concatenate([p.ids for p in parts])
        order = np.argsort(ids, kind="stable")
        out = cls(ids[order], np.concatenate([p.tfs for p in parts])[order],
                  np.concatenate([p.lengths for p in parts])[order])
        if len(out.ids) > 1 and not (np.diff(out.ids) > 0).all():
            raise ValueError("a chunk appears twice in one term's postings")
        return out

    def without(self, chunk_ids: np.ndarray) -> Postings:
        keep = ~np.isin(self.ids, chunk_ids)
        return Postings(self.ids[keep], self.tfs[keep], self.lengths[keep])


@dataclass
class Block:
    """One stored block: its chunk-id range, size and bounds (for pruning) and its packed postings."""

    first_chunk: int
    last_chunk: int
    size: int
    max_tf: int
    min_length: int
    data: bytes


def _narrowest(values: np.ndarray, types: tuple[str, ...]) -> int:
    top = int(values.max()) if len(values) else 0
    low = int(values.min()) if len(values) else 0
    for code, kind in enumerate(types[:-1]):
        if low >= 0 and top <= np.iinfo(kind).max:
            return code
    return len(types) - 1


def pack(postings: Postings) -> Block:
    ids, tfs, lengths = postings.ids, postings.tfs, postings.lengths
    first = int(ids[0])
    gaps, offsets = np.diff(ids), ids - first
    id_code = 0 if _narrowest(gaps, _ID_TYPES) == 0 else max(1, _narrowest(offsets, _ID_TYPES))
    id_values = (gaps, offsets, ids)[id_code]
    tf_code, length_code = _narrowest(tfs, _TF_TYPES), _narrowest(lengths, _LENGTH_TYPES)
    data = b"".join((bytes([id_code | tf_code << 2 | length_code << 4]),
                     id_values.astype(_ID_TYPES[id_code]).tobytes(), tfs.astype(_TF_TYPES[tf_code]).tobytes(),
                     lengths.astype(_LENGTH_TYPES[length_code]).tobytes()))
    return Block(first, int(ids[-1]), len(ids), int(tfs.max()), int(lengths.min()), data)


def unpack(first_chunk: int, size: int, data: bytes) -> Postings:
    code = data[0]
    id_type, tf_type, length_type = _ID_TYPES[code & 3], _TF_TYPES[code >> 2 & 3], _LENGTH_TYPES[code >> 4 & 3]
    if code & 3 == 0:  # gaps: the first id is the row's
        ids = np.empty(size, np.int64)
        ids[0] = first_chunk
        ids[1:] = np.frombuffer(data, id_type, size - 1, 1)
        np.cumsum(ids, out=ids)
        offset = 1 + 2 * (size - 1)
    else:
        ids = np.frombuffer(data, id_type, size, 1).astype(np.int64)
        if code & 3 == 1:
            ids += first_chunk
        offset = 1 + id_type.itemsize * size
    # tfs and lengths stay in their stored (narrow, read-only) types: arithmetic widens them.
    tfs = np.frombuffer(data, tf_type, size, offset)
    lengths = np.frombuffer(data, length_type, size, offset + tf_type.itemsize * size)
    return Postings(ids, tfs, lengths)


def cut(postings: Postings) -> list[Block]:
    """The canonical blocks of a posting list: every BLOCK_SIZE postings from its start."""
    size = BLOCK_SIZE
    return [pack(Postings(postings.ids[i:i + size], postings.tfs[i:i + size], postings.lengths[i:i + size]))
            for i in range(0, len(postings), size)]


_LIMITS = (2**16 - 1, 2**32 - 1)  # largest value of the first two types of ids (gaps, offsets) and lengths
_TF_LIMITS = (2**8 - 1, 2**16 - 1)


def _codes(low: np.ndarray, top: np.ndarray, limits: tuple[int, int]) -> np.ndarray:
    """_narrowest() of many value ranges at once."""
    fits = low >= 0
    return np.where(fits & (top <= limits[0]), 0, np.where(fits & (top <= limits[1]), 1, 2))


def cut_lists(ids: np.ndarray, tfs: np.ndarray, lengths: np.ndarray, starts: np.ndarray
              ) -> tuple[list[int], list[Block]]:
    """cut() of many posting lists at once, byte for byte: the lists are consecutive runs of the flat int64
    arrays, starting at `starts` (ascending, the first 0), each sorted by chunk id. Returns each block's list
    index and the blocks, in order. Indexing one document packs a short list per term, tens of thousands for
    a Korean document: this costs a few array operations for all of them instead of a dozen for each."""
    total = len(ids)
    if not total:
        return [], []
    starts = np.asarray(starts, np.int64)
    sizes = np.diff(np.r_[starts, total])
    pieces = -(-sizes // BLOCK_SIZE)  # blocks per list
    owners = np.repeat(np.arange(len(starts)), pieces)
    starts = np.repeat(starts, pieces) + BLOCK_SIZE * (np.arange(len(owners)) - np.repeat(np.cumsum(pieces) - pieces,
                                                                                           pieces))
    ends = np.r_[starts[1:], total]
    last = ends - 1
    first_ids = ids[starts]
    steps = np.zeros(total, np.int64)
    steps[:-1] = np.diff(ids)
    steps[last] = 0  # the step into the next block is no gap (and a one-posting block has none: 0, as pack())
    id_codes = np.where(_codes(np.minimum.reduceat(steps, starts), np.maximum.reduceat(steps, starts),
                               _LIMITS) == 0, 0,
                        np.maximum(1, _codes(np.minimum.reduceat(ids, starts) - first_ids,
                                             np.maximum.reduceat(ids, starts) - first_ids, _LIMITS)))
    max_tfs, min_lengths = np.maximum.reduceat(tfs, starts), np.minimum.reduceat(lengths, starts)
    tf_codes = _codes(np.minimum.reduceat(tfs, starts), max_tfs, _TF_LIMITS)
    length_codes = _codes(min_lengths, np.maximum.reduceat(lengths, starts), _LIMITS)
    # Each field converted once per type used; a block's bytes are slices (values out of a type's range only
    # occur outside the blocks that use it).
    id_values = {0: steps, 1: ids - np.repeat(first_ids, ends - starts), 2: ids}
    id_bytes = {c: id_values[c].astype(_ID_TYPES[c]).tobytes() for c in set(id_codes.tolist())}
    tf_bytes = {c: tfs.astype(_TF_TYPES[c]).tobytes() for c in set(tf_codes.tolist())}
    length_bytes = {c: lengths.astype(_LENGTH_TYPES[c]).tobytes() for c in set(length_codes.tolist())}
    blocks = []
    for start, end, first, last_id, id_code, tf_code, length_code, max_tf, min_length in zip(
            starts.tolist(), ends.tolist(), first_ids.tolist(), ids[last].tolist(), id_codes.tolist(),
            tf_codes.tolist(), length_codes.tolist(), max_tfs.tolist(), min_lengths.tolist(), strict=True):
        width = _ID_TYPES[id_code].itemsize
        id_part = (id_bytes[0][2 * start:2 * (end - 1)] if id_code == 0
                   else id_bytes[id_code][width * start:width * end])
        tf_width, length_width = _TF_TYPES[tf_code].itemsize, _LENGTH_TYPES[length_code].itemsize
        data = b"".join((bytes((id_code | tf_code << 2 | length_code << 4,)), id_part,
                         tf_bytes[tf_code][tf_width * start:tf_width * end],
                         length_bytes[length_code][length_width * start:length_width * end]))
        blocks.append(Block(first, last_id, end - start, max_tf, min_length, data))
    return owners.tolist(), blocks


@contextmanager
def binary_cursor(using: str = DEFAULT_DB_ALIAS):
    """A psycopg cursor on Django's connection `using` (same transaction) that exchanges values in binary:
    Django's client-side cursors would send and receive every block as hex text, twice its size."""
    connection = connections[using]
    with connection.cursor():  # connects and syncs the row-level-security scope (config.dbbackend)
        pass
    with psycopg.Cursor(connection.connection) as cursor:
        yield cursor
