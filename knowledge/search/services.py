"""Index maintenance for retrieval.

Ingestion calls these hooks:

    postings_index_document(*, tenant, document[, terms])  after every chunk of a document version is stored
                                                   (replaces that document's postings; idempotent; `terms`:
                                                   the chunks' terms analysed ahead, a ChunkTerms)
    postings_delete_document(*, tenant, document_id)  before a document's chunks are deleted or replaced

Indexing one document writes one small "fresh" block per term (cheap, whatever the KB's size) and counts the
document; every settings.SEARCH_MERGE_AFTER_DOCUMENTS such documents, and on the beat sweep, a background merge
(merging.py) folds the fresh blocks into full ones. Bulk loads and rebuilds (postings_index_documents) merge as
they go, so both end in the same layout.

Every write to one KB's index first locks that KB's IndexStats row, so concurrent writers of a KB (ingestion,
removal, merging) queue up there, while writers of different KBs run in parallel.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Tenant
from accounts.tenancy import system_scope, tenant_scope
from config import replicas
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.search import merging
from knowledge.search.analysis import analyzer_for
from knowledge.search.models import IndexedDocument, IndexStats, PostingBlock, TermStat
from knowledge.search.postings import Postings, binary_cursor, unpack

_INSERT_BATCH = 2000


def index_text(*, title: str, heading_path: str, text: str) -> str:
    """What BM25 sees for a chunk: its document's title and heading path give every chunk its context."""
    parts = [title or ""]
    if heading_path and heading_path != title:
        parts.append(heading_path)
    parts.append(text or "")
    return "\n".join(p for p in parts if p)


def analyzer_for_kb(kb: KnowledgeBase):
    return analyzer_for(kb.language)


def _lock_stats(tenant, kb: KnowledgeBase) -> None:
    """Create the KB's stats row if needed and lock it for this transaction. Every change to the index comes
    through here, so the tenant's searches read it (not an older replica) once it commits."""
    replicas.note_write(tenant_id=tenant.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO search_indexstats (tenant_id, kb_id, chunk_count, total_length, analyzer, version, "
            "average_idf, average_idf_version, fresh_documents) VALUES (%s, %s, 0, 0, %s, 0, NULL, -1, 0) "
            "ON CONFLICT (kb_id) DO NOTHING",
            [tenant.pk, kb.pk, analyzer_for_kb(kb).signature],
        )
        cursor.execute("SELECT id FROM search_indexstats WHERE kb_id = %s FOR UPDATE", [kb.pk])


@dataclass
class _Analysed:
    """Postings of a set of documents, held in flat typed arrays (millions of postings in a bulk load)."""

    term_ids: dict[str, int] = field(default_factory=dict)
    term_col: array = field(default_factory=lambda: array("q"))
    chunk_col: array = field(default_factory=lambda: array("q"))
    tf_col: array = field(default_factory=lambda: array("q"))
    length_col: array = field(default_factory=lambda: array("q"))
    documents: dict[int, dict] = field(default_factory=dict)  # id -> chunks, length, terms, chunk ids

    def by_term(self) -> dict[str, Postings]:
        terms = np.frombuffer(self.term_col, np.int64)
        chunks = np.frombuffer(self.chunk_col, np.int64)
        order = np.lexsort((chunks, terms))
        terms, chunks = terms[order], chunks[order]
        tfs = np.frombuffer(self.tf_col, np.int64)[order]
        lengths = np.frombuffer(self.length_col, np.int64)[order]
        names = list(self.term_ids)
        starts = np.flatnonzero(np.r_[True, terms[1:] != terms[:-1]]) if len(terms) else np.empty(0, np.int64)
        ends = np.r_[starts[1:], len(terms)]
        return {names[terms[s]]: Postings(chunks[s:e], tfs[s:e], lengths[s:e]) for s, e in zip(starts, ends,
                                                                                                strict=True)}

    def runs(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The same postings as flat arrays ordered by term (as sorted() orders names), then chunk id: the terms
        that have postings, the chunk ids, tfs, lengths, and where each term's run starts."""
        names = sorted(self.term_ids)
        rank = np.empty(len(names), np.int64)
        rank[[self.term_ids[name] for name in names]] = np.arange(len(names))
        terms = rank[np.frombuffer(self.term_col, np.int64)]
        chunks = np.frombuffer(self.chunk_col, np.int64)
        order = np.lexsort((chunks, terms))
        terms = terms[order]
        starts = np.flatnonzero(np.r_[True, terms[1:] != terms[:-1]]) if len(terms) else np.empty(0, np.int64)
        return ([names[r] for r in terms[starts].tolist()], chunks[order],
                np.frombuffer(self.tf_col, np.int64)[order], np.frombuffer(self.length_col, np.int64)[order], starts)


class ChunkTerms:
    """The BM25 terms of one document's chunks, analysed ahead of indexing: ingestion analyses each stored batch
    while the next one embeds. Indexing the document takes them for every stored chunk whose title, heading
    path and text are the ones analysed here, and analyses any other chunk as usual."""

    def __init__(self, *, kb: KnowledgeBase, document_id: int, title: str):
        self.analyzer = analyzer_for_kb(kb)
        self.document_id, self.title = document_id, title
        self.term_ids: dict[str, int] = {}
        self._chunks: dict[int, tuple] = {}  # ordinal -> heading path, text, term ids, tfs, length

    def add(self, *, ordinal: int, heading_path: str, text: str) -> None:
        tokens = self.analyzer.tokens(index_text(title=self.title, heading_path=heading_path, text=text))
        self._chunks[ordinal] = (heading_path, text, *_counted(tokens, self.term_ids))

    def get(self, *, ordinal: int, title: str, heading_path: str, text: str) -> tuple | None:
        known = self._chunks.get(ordinal)
        if known is None or title != self.title or known[0] != heading_path or known[1] != text:
            return None
        return known[2:]


def _counted(tokens: list[str], term_ids: dict[str, int]) -> tuple[array, array, int]:
    """A chunk's distinct terms (as ids in `term_ids`, new ones added), their tfs, and its length."""
    counts = Counter(tokens)
    return array("q", [term_ids.setdefault(t, len(term_ids)) for t in counts]), array("q", counts.values()), len(tokens)


def _analyse(kb: KnowledgeBase, documents: list[tuple[int, str, int]], ahead: ChunkTerms | None = None) -> _Analysed:
    """Analyse the stored chunks of `documents` [(id, title, version)], taking the terms of `ahead`'s document
    from it where they are still right."""
    analyzer = analyzer_for_kb(kb)
    titles = {doc_id: title for doc_id, title, _v in documents}
    if ahead is not None and (list(titles) != [ahead.document_id] or ahead.analyzer.signature != analyzer.signature):
        ahead = None
    out = _Analysed(term_ids=ahead.term_ids if ahead is not None else {})
    for doc_id in titles:
        out.documents[doc_id] = {"chunks": 0, "length": 0, "terms": set(), "chunk_ids": []}
    rows = (Chunk.objects.filter(document_id__in=list(titles)).order_by("document_id", "ordinal")
            .values_list("id", "document_id", "ordinal", "text", "heading_path"))
    for chunk_id, doc_id, ordinal, text, heading_path in rows.iterator(chunk_size=1000):
        known = ahead.get(ordinal=ordinal, title=titles[doc_id], heading_path=heading_path, text=text) if ahead else None
        term_ids, tfs, length = known or _counted(
            analyzer.tokens(index_text(title=titles[doc_id], heading_path=heading_path, text=text)), out.term_ids)
        doc = out.documents[doc_id]
        doc["chunks"] += 1
        doc["length"] += length
        doc["chunk_ids"].append(chunk_id)
        doc["terms"].update(term_ids)
        out.term_col.extend(term_ids)
        out.chunk_col.extend(array("q", [chunk_id]) * len(term_ids))
        out.tf_col.extend(tfs)
        out.length_col.extend(array("q", [length]) * len(term_ids))
    return out


def _write_postings(tenant, kb: KnowledgeBase, documents: list[tuple[int, str, int]], *, fresh: bool,
                    ahead: ChunkTerms | None = None) -> None:
    """Index `documents` [(id, title, version)] of `kb` from their stored chunks. Caller holds the KB lock and
    has removed their old postings. `fresh`: leave the new postings in fresh blocks for a background merge
    (one document at a time); otherwise merge them into the KB's blocks now (bulk). `ahead`: see _analyse."""
    analysed = _analyse(kb, documents, ahead)
    with binary_cursor() as cursor:
        if fresh:  # one block per term and document, packed all at once
            terms, ids, tfs, lengths, starts = analysed.runs()
            merging.insert_runs(cursor, tenant_id=tenant.pk, kb_id=kb.pk, terms=terms, runs=(ids, tfs, lengths, starts),
                                fresh=True)
            stats = ([int(n) for n in np.diff(np.r_[starts, len(ids)])], np.maximum.reduceat(tfs, starts).tolist(),
                     np.minimum.reduceat(lengths, starts).tolist()) if terms else ([], [], [])
        else:
            added = analysed.by_term()
            terms = sorted(added)
            merging.merge_terms(cursor, tenant_id=tenant.pk, kb_id=kb.pk, terms=terms, added=added)
            stats = ([len(added[t]) for t in terms], [int(added[t].tfs.max()) for t in terms],
                     [int(added[t].lengths.min()) for t in terms])
        if terms:
            # Sorted terms: a fixed lock order on term rows.
            cursor.execute(
                """
                INSERT INTO search_termstat (tenant_id, kb_id, term, df, max_tf, min_length)
                SELECT %s, %s, t.term, t.df, t.max_tf, t.min_length
                FROM unnest(%s::text[], %s::int[], %s::int[], %s::int[]) AS t(term, df, max_tf, min_length)
                ORDER BY t.term
                ON CONFLICT (kb_id, term) DO UPDATE SET df = search_termstat.df + EXCLUDED.df,
                    max_tf = GREATEST(search_termstat.max_tf, EXCLUDED.max_tf),
                    min_length = LEAST(search_termstat.min_length, EXCLUDED.min_length)
                """,
                [tenant.pk, kb.pk, terms, *stats],
            )
    names = list(analysed.term_ids)
    IndexedDocument.objects.bulk_create([
        IndexedDocument(tenant_id=tenant.pk, document_id=doc_id, kb_id=kb.pk,
                        chunk_count=analysed.documents[doc_id]["chunks"],
                        total_length=analysed.documents[doc_id]["length"], document_version=version or 0,
                        terms=sorted(names[t] for t in analysed.documents[doc_id]["terms"]),
                        chunk_ids=analysed.documents[doc_id]["chunk_ids"])
        for doc_id, _title, version in documents
    ], batch_size=_INSERT_BATCH)
    IndexStats.objects.filter(kb_id=kb.pk).update(
        chunk_count=F("chunk_count") + sum(d["chunks"] for d in analysed.documents.values()),
        total_length=F("total_length") + sum(d["length"] for d in analysed.documents.values()),
        version=F("version") + 1,
        indexed_at=timezone.now(),
        **({"fresh_documents": F("fresh_documents") + len(documents)} if fresh else {}),
    )


def _remove(tenant, document_id: int) -> None:
    """Subtract a document's contribution (postings, document frequencies, totals). Caller holds the lock.
    Only the blocks of the document's terms whose chunk range covers its chunks are read and rewritten."""
    record = IndexedDocument.objects.filter(document_id=document_id).first()
    if record is None:
        return
    removed: Counter = Counter()
    if record.terms and record.chunk_ids:
        chunk_ids = np.array(record.chunk_ids, dtype=np.int64)
        with binary_cursor() as cursor:
            cursor.execute(
                "SELECT id, term, first_chunk, size, data FROM search_postingblock WHERE kb_id = %s "
                "AND term = ANY(%s::text[]) AND first_chunk <= %s AND last_chunk >= %s",
                [record.kb_id, record.terms, int(chunk_ids.max()), int(chunk_ids.min())], binary=True,
            )
            changed, emptied = [], []
            for block_id, term, first, size, data in cursor.fetchall():
                postings = unpack(first, size, data)
                kept = postings.without(chunk_ids)
                if len(kept) == len(postings):
                    continue
                removed[term] += len(postings) - len(kept)
                if len(kept):
                    changed.append((block_id, kept))
                else:
                    emptied.append(block_id)
            merging.replace_blocks(cursor, changed=changed, deleted=emptied)
            if removed:
                terms = sorted(removed)
                cursor.execute(
                    """
                    UPDATE search_termstat t SET df = t.df - r.n
                    FROM unnest(%s::text[], %s::int[]) AS r(term, n)
                    WHERE t.kb_id = %s AND t.term = r.term
                    """,
                    [terms, [removed[t] for t in terms], record.kb_id],
                )
                cursor.execute("DELETE FROM search_termstat WHERE kb_id = %s AND term = ANY(%s::text[]) AND df <= 0",
                               [record.kb_id, terms])
    IndexStats.objects.filter(kb_id=record.kb_id).update(
        chunk_count=F("chunk_count") - record.chunk_count,
        total_length=F("total_length") - record.total_length,
        version=F("version") + 1,
    )
    record.delete()


def postings_index_document(*, tenant, document, terms: ChunkTerms | None = None) -> None:
    """(Re)build the BM25 postings of `document` from its stored chunks, as fresh blocks; asks for a merge of
    the KB's fresh blocks (after commit) every settings.SEARCH_MERGE_AFTER_DOCUMENTS documents. `terms`: the
    chunks' terms analysed ahead (ChunkTerms), used where they match the stored chunks."""
    with tenant_scope(tenant), transaction.atomic():
        kb = KnowledgeBase.objects.get(pk=document.kb_id)
        _lock_stats(tenant, kb)
        _remove(tenant, document.pk)
        row = Document.objects.filter(pk=document.pk).values_list("title", "version").first()
        if row is None:  # the document is gone: nothing to index
            return
        _write_postings(tenant, kb, [(document.pk, row[0], row[1])], fresh=True, ahead=terms)
        fresh = IndexStats.objects.filter(kb_id=kb.pk).values_list("fresh_documents", flat=True).first()
        if merging.merge_is_due(fresh or 0):
            merging.request_merge(tenant_id=tenant.pk, kb_id=kb.pk)


def postings_index_documents(*, tenant, kb: KnowledgeBase, document_ids: list[int], batch: int = 500) -> None:
    """Index many documents of one KB (bulk loads, rebuilds), merged as they go: one transaction per `batch`
    documents."""
    with tenant_scope(tenant):
        for start in range(0, len(document_ids), batch):
            ids = document_ids[start:start + batch]
            with transaction.atomic():
                _lock_stats(tenant, kb)
                for doc_id in IndexedDocument.objects.filter(document_id__in=ids).values_list("document_id", flat=True):
                    _remove(tenant, doc_id)
                docs = list(Document.objects.filter(pk__in=ids, kb=kb).values_list("pk", "title", "version"))
                _write_postings(tenant, kb, docs, fresh=False)


def postings_delete_document(*, tenant, document_id: int) -> None:
    """Remove a document's postings and its share of the KB's statistics (no-op when never indexed)."""
    with tenant_scope(tenant), transaction.atomic():
        kb_id = IndexedDocument.objects.filter(document_id=document_id).values_list("kb_id", flat=True).first()
        if kb_id is None:
            return
        kb = KnowledgeBase.objects.filter(pk=kb_id).first()
        if kb is None:
            return
        _lock_stats(tenant, kb)
        _remove(tenant, document_id)


def index_rebuild_kb(*, tenant, kb: KnowledgeBase) -> int:
    """Rebuild a KB's whole BM25 index from its chunks (after an analyser change or to repair statistics).
    Returns the number of documents indexed."""
    with tenant_scope(tenant):
        with transaction.atomic():
            _lock_stats(tenant, kb)
            PostingBlock.objects.filter(kb=kb).delete()
            IndexedDocument.objects.filter(kb=kb).delete()
            TermStat.objects.filter(kb=kb).delete()
            # The signature is only set here and when the index is created: documents added to an index built with
            # an older analyser leave it marked stale (index_rebuild_stale) until it is rebuilt whole.
            IndexStats.objects.filter(kb=kb).update(chunk_count=0, total_length=0, version=F("version") + 1,
                                                    fresh_documents=0, analyzer=analyzer_for_kb(kb).signature)
        document_ids = list(Document.objects.filter(kb=kb).order_by("pk").values_list("pk", flat=True))
        postings_index_documents(tenant=tenant, kb=kb, document_ids=document_ids)
    return len(document_ids)


def index_rebuild_stale(*, dry_run: bool = False) -> list[tuple[int, int]]:
    """Rebuild every KB whose BM25 index was written by another analyser version (IndexStats.analyzer differs
    from the current signature, e.g. after an analysis change). Returns the (tenant id, KB id) pairs found."""
    with system_scope():  # a question about every tenant's KBs
        stale = [(tenant_id, kb_id) for tenant_id, kb_id, language, signature in
                 IndexStats.all_tenants.values_list("tenant_id", "kb_id", "kb__language", "analyzer")
                 if signature != analyzer_for(language).signature]
    if not dry_run:
        for tenant_id, kb_id in stale:
            tenant = Tenant.objects.get(pk=tenant_id)
            with tenant_scope(tenant):
                index_rebuild_kb(tenant=tenant, kb=KnowledgeBase.objects.get(pk=kb_id))
    return stale
