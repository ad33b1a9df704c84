"""Merging posting blocks, the way search engines merge segments.

Indexing one document (live ingestion) adds one small "fresh" block per term: cheap, but a term common to a
thousand documents would then be a thousand rows to read per query. Merging rewrites each affected term's
tail in the canonical layout (postings.py): full blocks of BLOCK_SIZE postings in chunk-id order, the last one
shorter. Full blocks before the first fresh posting are never rewritten, so a merge costs about one block per
term plus the new postings, whatever the KB's size, and equals what a bulk load or a rebuild writes.

Policy: a KB is merged on the ingest queue when SEARCH_MERGE_AFTER_DOCUMENTS documents were indexed one by one
since its last merge (requested after the indexing commits), and by the beat sweep once its last indexing is
SEARCH_MERGE_SWEEP_SECONDS old, so the last documents of an upload are merged too. A merge is idempotent (it
only folds what is fresh), runs one transaction per MERGE_TERMS_PER_TRANSACTION terms under the KB's index
lock (ingestion and removal of the KB wait for at most one such step), and a search sees either the blocks
before a step or after it, never both.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.tenancy import system_scope, tenant_scope
from knowledge.search import postings as codec
from knowledge.search.models import IndexStats
from knowledge.search.postings import Block, Postings, binary_cursor, cut, pack, unpack

log = logging.getLogger(__name__)

MERGE_TERMS_PER_TRANSACTION = 5000


def insert_blocks(cursor, *, tenant_id: int, kb_id: int, postings: dict[str, Postings], fresh: bool) -> None:
    """Write each term's postings as new blocks (cut every BLOCK_SIZE postings), in term order."""
    rows = [(term, block) for term in sorted(postings) for block in cut(postings[term])]
    _insert(cursor, tenant_id=tenant_id, kb_id=kb_id, rows=rows, fresh=fresh)


def insert_runs(cursor, *, tenant_id: int, kb_id: int, terms: list[str], runs: tuple, fresh: bool) -> None:
    """insert_blocks() of postings given as flat arrays (chunk ids, tfs, lengths, run starts: one run per term of
    the sorted `terms`), packed in one pass (postings.cut_lists)."""
    owners, blocks = codec.cut_lists(*runs)
    _insert(cursor, tenant_id=tenant_id, kb_id=kb_id, rows=[(terms[o], b) for o, b in zip(owners, blocks, strict=True)],
            fresh=fresh)


def _insert(cursor, *, tenant_id: int, kb_id: int, rows: list[tuple[str, Block]], fresh: bool) -> None:
    # COPY is refused under row-level security: one INSERT of parallel arrays per few thousand blocks.
    for start in range(0, len(rows), 5000):
        part = rows[start:start + 5000]
        cursor.execute(
            """
            INSERT INTO search_postingblock (tenant_id, kb_id, term, first_chunk, last_chunk, size, max_tf,
                                             min_length, fresh, data)
            SELECT %b, %b, b.term, b.first_chunk, b.last_chunk, b.size, b.max_tf, b.min_length, %b, b.data
            FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::int[], %b::int[], %b::int[], %b::bytea[])
                AS b(term, first_chunk, last_chunk, size, max_tf, min_length, data)
            """,
            [tenant_id, kb_id, fresh, [t for t, _b in part], [b.first_chunk for _t, b in part],
             [b.last_chunk for _t, b in part], [b.size for _t, b in part], [b.max_tf for _t, b in part],
             [b.min_length for _t, b in part], [b.data for _t, b in part]],
        )


def replace_blocks(cursor, *, changed: list[tuple[int, Postings]], deleted: list[int]) -> None:
    """Store new contents for blocks (same term, kept fresh or not) and delete others, by id."""
    if deleted:
        cursor.execute("DELETE FROM search_postingblock WHERE id = ANY(%s)", [deleted])
    if changed:
        packed = [(block_id, pack(postings)) for block_id, postings in changed]
        cursor.execute(
            """
            UPDATE search_postingblock pb SET first_chunk = b.first_chunk, last_chunk = b.last_chunk,
                size = b.size, max_tf = b.max_tf, min_length = b.min_length, data = b.data
            FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::int[], %b::int[], %b::int[], %b::bytea[])
                AS b(id, first_chunk, last_chunk, size, max_tf, min_length, data)
            WHERE pb.id = b.id
            """,
            [[i for i, _b in packed], [b.first_chunk for _i, b in packed], [b.last_chunk for _i, b in packed],
             [b.size for _i, b in packed], [b.max_tf for _i, b in packed], [b.min_length for _i, b in packed],
             [b.data for _i, b in packed]],
        )


def _tail(blocks: list[tuple], start_chunk: int) -> list[tuple]:
    """The blocks to rewrite, from a term's blocks (id, first, last, size, fresh) in chunk order: every block
    reaching `start_chunk` (the first new posting) or later, and the short block before them (the old last
    block), so that every block left in front is full and the rewritten tail starts on a block boundary."""
    start = next((i for i, b in enumerate(blocks) if b[2] >= start_chunk), len(blocks))
    if start > 0 and blocks[start - 1][3] < codec.BLOCK_SIZE:
        start -= 1
    return blocks[start:]


def merge_terms(cursor, *, tenant_id: int, kb_id: int, terms: list[str],
                added: dict[str, Postings] | None = None) -> int:
    """Fold the fresh blocks of `terms` (and `added`, postings not stored yet) into their canonical blocks.
    Caller holds the KB's index lock; `cursor` is a binary_cursor. Returns the number of blocks written."""
    added = added or {}
    if not terms:
        return 0
    cursor.execute(
        "SELECT term, id, first_chunk, last_chunk, size, fresh FROM search_postingblock "
        "WHERE kb_id = %s AND term = ANY(%s::text[]) ORDER BY term, first_chunk, id",
        [kb_id, terms],
    )
    by_term: dict[str, list[tuple]] = defaultdict(list)
    for term, *block in cursor.fetchall():
        by_term[term].append(tuple(block))
    tails: dict[str, list[tuple]] = {}
    for term in terms:
        blocks = by_term.get(term, [])
        starts = [b[1] for b in blocks if b[4]]
        if term in added:
            starts.append(int(added[term].ids[0]))
        if starts:
            tails[term] = _tail(blocks, min(starts))
    rewrite = [b[0] for tail in tails.values() for b in tail]
    contents: dict[int, Postings] = {}
    if rewrite:
        cursor.execute("SELECT id, first_chunk, size, data FROM search_postingblock WHERE id = ANY(%s)", [rewrite],
                       binary=True)
        contents = {block_id: unpack(first, size, data) for block_id, first, size, data in cursor.fetchall()}
    rows = []
    for term in sorted(tails):
        parts = [contents[b[0]] for b in tails[term]] + ([added[term]] if term in added else [])
        rows.extend((term, block) for block in cut(Postings.concat(parts)))
    if rewrite:
        cursor.execute("DELETE FROM search_postingblock WHERE id = ANY(%s)", [rewrite])
    _insert(cursor, tenant_id=tenant_id, kb_id=kb_id, rows=rows, fresh=False)
    return len(rows)


def postings_merge_kb(*, tenant, kb_id: int) -> int:
    """Merge every fresh block of a KB; returns the number of terms merged (0: nothing was fresh, or the KB is
    gone). Idempotent; blocks that ingestion adds meanwhile are merged by the same call or left fresh for the
    next one, never lost."""
    merged = 0
    with tenant_scope(tenant):
        while True:
            with transaction.atomic(), binary_cursor() as cursor:
                cursor.execute("SELECT id FROM search_indexstats WHERE kb_id = %s FOR UPDATE", [kb_id])
                if cursor.fetchone() is None:
                    return merged
                cursor.execute(
                    "SELECT DISTINCT term FROM search_postingblock WHERE kb_id = %s AND fresh ORDER BY term LIMIT %s",
                    [kb_id, MERGE_TERMS_PER_TRANSACTION],
                )
                terms = [row[0] for row in cursor.fetchall()]
                if not terms:
                    IndexStats.objects.filter(kb_id=kb_id).update(fresh_documents=0)
                    return merged
                merge_terms(cursor, tenant_id=tenant.pk, kb_id=kb_id, terms=terms)
                merged += len(terms)


def merge_is_due(fresh_documents: int) -> bool:
    """Whether indexing the document that made `fresh_documents` should ask for a merge (once per so many)."""
    every = settings.SEARCH_MERGE_AFTER_DOCUMENTS
    return fresh_documents > 0 and fresh_documents % every == 0


def request_merge(*, tenant_id: int, kb_id: int) -> None:
    """Queue a merge of the KB on the ingest queue once the current transaction commits."""
    # cycle: knowledge.search.tasks -> knowledge.search.merging
    from knowledge.search.tasks import merge_postings

    transaction.on_commit(lambda: merge_postings.apply_async(kwargs={"kb_id": kb_id, "tenant_id": tenant_id},
                                                             queue=settings.INGEST_QUEUE))


def merge_sweep() -> int:
    """Queue a merge for every KB whose fresh blocks have waited SEARCH_MERGE_SWEEP_SECONDS since its last
    indexing (beat). Returns how many were queued."""
    quiet_since = timezone.now() - timedelta(seconds=settings.SEARCH_MERGE_SWEEP_SECONDS)
    with system_scope():  # a question about every tenant's KBs
        due = list(IndexStats.all_tenants.filter(fresh_documents__gt=0, indexed_at__lte=quiet_since)
                   .values_list("tenant_id", "kb_id"))
    for tenant_id, kb_id in due:
        request_merge(tenant_id=tenant_id, kb_id=kb_id)
    if due:
        log.info("search: merge queued for %s knowledge bases", len(due))
    return len(due)
