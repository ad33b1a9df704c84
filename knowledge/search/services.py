"""Index maintenance for retrieval, and the evaluation feature's writes.

Ingestion calls these hooks:

    postings_index_document(*, tenant, document)  after every chunk of a document version is stored
                                                   (replaces that document's postings; idempotent)
    postings_delete_document(*, tenant, document_id)  before a document's chunks are deleted or replaced

Every write to one KB's index first locks that KB's IndexStats row, so concurrent writers of a KB queue up
there (and never deadlock on term rows), while writers of different KBs run in parallel.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from django.db import connection, transaction
from django.db.models import F

from accounts.tenancy import tenant_scope
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.search.analysis import analyzer_for
from knowledge.search.models import IndexedDocument, IndexStats, PostingBlock, TermStat

_INSERT_BATCH = 2000
_FLAT_BATCH = 200_000  # postings per INSERT statement


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
    """Create the KB's stats row if needed and lock it for this transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO search_indexstats (tenant_id, kb_id, chunk_count, total_length, analyzer, version, "
            "average_idf, average_idf_version) VALUES (%s, %s, 0, 0, %s, 0, NULL, -1) ON CONFLICT (kb_id) DO NOTHING",
            [tenant.pk, kb.pk, analyzer_for_kb(kb).signature],
        )
        cursor.execute("SELECT id FROM search_indexstats WHERE kb_id = %s FOR UPDATE", [kb.pk])


def _remove(tenant, document_id: int) -> None:
    """Subtract a document's contribution (postings, document frequencies, totals). Caller holds the lock."""
    record = IndexedDocument.objects.filter(document_id=document_id).first()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH removed AS (
                SELECT kb_id, term, SUM(cardinality(chunk_ids)) AS n FROM search_postingblock
                WHERE document_id = %s GROUP BY kb_id, term
            )
            UPDATE search_termstat t SET df = t.df - removed.n FROM removed
            WHERE t.kb_id = removed.kb_id AND t.term = removed.term
            RETURNING t.id, t.df
            """,
            [document_id],
        )
        # A separate statement: rows updated by a CTE are invisible to a DELETE in the same statement.
        gone = [row_id for row_id, df in cursor.fetchall() if df <= 0]
        if gone:
            cursor.execute("DELETE FROM search_termstat WHERE id = ANY(%s)", [gone])
        cursor.execute("DELETE FROM search_postingblock WHERE document_id = %s", [document_id])
    if record is not None:
        IndexStats.objects.filter(kb_id=record.kb_id).update(
            chunk_count=F("chunk_count") - record.chunk_count,
            total_length=F("total_length") - record.total_length,
            version=F("version") + 1,
        )
        record.delete()


def _write_postings(tenant, kb: KnowledgeBase, documents: list[tuple[int, str, int]]) -> None:
    """Index `documents` [(id, title, version)] of `kb` from their stored chunks. Caller holds the KB lock and
    has removed their old postings."""
    analyzer = analyzer_for_kb(kb)
    titles = {doc_id: title for doc_id, title, _v in documents}
    per_doc: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(lambda: defaultdict(list))
    doc_totals: dict[int, list[int]] = {doc_id: [0, 0] for doc_id in titles}
    rows = (Chunk.objects.filter(document_id__in=list(titles)).order_by("document_id", "ordinal")
            .values_list("id", "document_id", "text", "heading_path"))
    for chunk_id, doc_id, text, heading_path in rows.iterator(chunk_size=1000):
        tokens = analyzer.tokens(index_text(title=titles[doc_id], heading_path=heading_path, text=text))
        length = len(tokens)
        doc_totals[doc_id][0] += 1
        doc_totals[doc_id][1] += length
        postings = per_doc[doc_id]
        for term, tf in Counter(tokens).items():
            postings[term].append((chunk_id, tf, length))
    dfs: Counter = Counter()
    max_tf: dict[str, int] = {}
    min_length: dict[str, int] = {}
    with connection.cursor() as cursor:
        # COPY is refused under row-level security: send flat arrays and let PostgreSQL build the blocks.
        # Rows go in term order, so a bulk load or rebuild stores each term's blocks side by side on disk and a
        # common term's postings are read from a few pages instead of one page per document.
        flat: tuple[list, ...] = ([], [], [], [], [])
        for doc_id, postings in per_doc.items():
            for term, entries in postings.items():
                dfs[term] += len(entries)
                for chunk_id, tf, length in entries:
                    for column, value in zip(flat, (doc_id, term, chunk_id, tf, length), strict=True):
                        column.append(value)
                    if tf > max_tf.get(term, 0):
                        max_tf[term] = tf
                    if length < min_length.get(term, length + 1):
                        min_length[term] = length
        start = 0
        while start < len(flat[0]):
            end = start + _FLAT_BATCH
            while end < len(flat[0]) and (flat[0][end], flat[1][end]) == (flat[0][end - 1], flat[1][end - 1]):
                end += 1  # never split one (document, term) block across statements
            cursor.execute(
                """
                INSERT INTO search_postingblock (tenant_id, kb_id, document_id, term, chunk_ids, tfs, lengths)
                SELECT %s, %s, p.document_id, p.term, array_agg(p.chunk_id ORDER BY p.chunk_id),
                       array_agg(p.tf ORDER BY p.chunk_id), array_agg(p.len ORDER BY p.chunk_id)
                FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::int[], %s::int[])
                    AS p(document_id, term, chunk_id, tf, len)
                GROUP BY p.document_id, p.term
                ORDER BY p.term, p.document_id
                """,
                [tenant.pk, kb.pk, *(column[start:end] for column in flat)],
            )
            start = end
        if dfs:
            terms = sorted(dfs)
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
                [tenant.pk, kb.pk, terms, [dfs[t] for t in terms], [max_tf[t] for t in terms],
                 [min_length[t] for t in terms]],
            )
    IndexedDocument.objects.bulk_create([
        IndexedDocument(tenant_id=tenant.pk, document_id=doc_id, kb_id=kb.pk, chunk_count=doc_totals[doc_id][0],
                        total_length=doc_totals[doc_id][1], document_version=version or 0)
        for doc_id, _title, version in documents
    ], batch_size=_INSERT_BATCH)
    IndexStats.objects.filter(kb_id=kb.pk).update(
        chunk_count=F("chunk_count") + sum(t[0] for t in doc_totals.values()),
        total_length=F("total_length") + sum(t[1] for t in doc_totals.values()),
        version=F("version") + 1,
        analyzer=analyzer.signature,
    )


def postings_index_document(*, tenant, document) -> None:
    """(Re)build the BM25 postings of `document` from its stored chunks."""
    with tenant_scope(tenant), transaction.atomic():
        kb = KnowledgeBase.objects.get(pk=document.kb_id)
        _lock_stats(tenant, kb)
        _remove(tenant, document.pk)
        row = Document.objects.filter(pk=document.pk).values_list("title", "version").first()
        if row is None:  # the document is gone: nothing to index
            return
        _write_postings(tenant, kb, [(document.pk, row[0], row[1])])


def postings_index_documents(*, tenant, kb: KnowledgeBase, document_ids: list[int], batch: int = 500) -> None:
    """Index many documents of one KB (bulk loads, rebuilds): one transaction per `batch` documents."""
    with tenant_scope(tenant):
        for start in range(0, len(document_ids), batch):
            ids = document_ids[start:start + batch]
            with transaction.atomic():
                _lock_stats(tenant, kb)
                for doc_id in IndexedDocument.objects.filter(document_id__in=ids).values_list("document_id", flat=True):
                    _remove(tenant, doc_id)
                docs = list(Document.objects.filter(pk__in=ids, kb=kb).values_list("pk", "title", "version"))
                _write_postings(tenant, kb, docs)


def postings_delete_document(*, tenant, document_id: int) -> None:
    """Remove a document's postings and its share of the KB's statistics (no-op when never indexed)."""
    with tenant_scope(tenant), transaction.atomic():
        kb_id = (
            IndexedDocument.objects.filter(document_id=document_id).values_list("kb_id", flat=True).first()
            or PostingBlock.objects.filter(document_id=document_id).values_list("kb_id", flat=True).first()
        )
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
            IndexStats.objects.filter(kb=kb).update(chunk_count=0, total_length=0, version=F("version") + 1)
        document_ids = list(Document.objects.filter(kb=kb).order_by("pk").values_list("pk", flat=True))
        postings_index_documents(tenant=tenant, kb=kb, document_ids=document_ids)
    return len(document_ids)
