"""Retrieval latency at scale: one KB of 100,000 chunks plus 10 other tenants' data, on PostgreSQL+pgvector,
for an English and a Korean corpus.

    scripts/env-run python bench/retrieval_latency.py                  # both corpora, each in its own database
    scripts/env-run python bench/retrieval_latency.py --corpus korean  # one corpus: stopwords, korean or zipf
    RET_BENCH_CHUNKS=20000 RET_BENCH_QUERIES=100 scripts/env-run python bench/retrieval_latency.py
    scripts/env-run python bench/retrieval_latency.py --smoke          # 100 chunks, 10 queries (seconds)

--smoke builds tiny corpora in databases of their own (<database>_smoke, e.g. ragdesk_ret_smoke): the
full-size data in ragdesk_ret_e5 / ragdesk_ret_e5_korean (ragdesk_ret / ragdesk_ret_korean for USE) is never read,
dropped or rebuilt by it.

Corpora (synthetic, documents of 20 chunks; chunk vectors are random unit vectors, since embedding 120k real
passages would take an hour on two cores):
- "stopwords" (English): 60-180 words per chunk from a 30,000-word Zipf vocabulary whose 33 most frequent words
  are Lucene's English stopwords, which the analyser drops, as in real English text; queries are 3-6 words of a
  random chunk, 30% with a very common word.
- "korean": 60-180 Korean words per chunk drawn from the word frequencies of the Korean passages in
  ../shared/eval (see KoreanCorpus); queries are the Korean development questions. Skipped, saying so, when
  ../shared/eval is absent.
- "zipf": like stopwords but every word is a content word (~17 indexed terms in over half the chunks).
The query path is the real one: queries are embedded by the KB's model (RET_BENCH_MODEL: multilingual-e5-small, which
a KB searches with once its background upgrade is done; use-multilingual, which it starts with) and go through
knowledge.search.selectors.search. The data is kept between runs (same tenant slugs, one database per corpus)
and rebuilt when the sizes change.

Measured per query, in one run on the same data: hybrid search (embedding, BM25, dense, fusion, hydration:
everything `search` does without LLM steps), the BM25 side alone, the dense side alone (query embedding +
HNSW query), and the bare pgvector top-8 query. Targets: hybrid p95 <= 60 ms, BM25 p95 <= 30 ms.
Last line: JSON with hybrid_p95_ms, bm25_p95_ms, dense_p95_ms, pgvector_bare_p95_ms, chunks (English corpus)
and ko_hybrid_p95_ms, ko_bm25_p95_ms, ... (Korean corpus; null when skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import django
import numpy as np
from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import SMOKE_HELP, pct
from django.core.management import call_command
from django.db import connection, transaction

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from knowledge.search.analysis import ENGLISH_STOPWORDS  # noqa: E402 (needs no django.setup())

# Modules of the app are imported inside functions: they need django.setup(), which run_corpus() runs only after
# use_bench_database() has pointed the settings at the corpus database.

EVAL_DIR = ROOT.parent / "shared" / "eval"

SMOKE = "--smoke" in sys.argv[1:]  # main() parses the command line; the sizes depend on this one option
CHUNKS = 100 if SMOKE else int(os.environ.get("RET_BENCH_CHUNKS", "100000"))
OTHER_TENANTS = 1 if SMOKE else int(os.environ.get("RET_BENCH_OTHER_TENANTS", "10"))
OTHER_CHUNKS = 40 if SMOKE else int(os.environ.get("RET_BENCH_OTHER_CHUNKS", "2000"))  # per other tenant
QUERIES = 10 if SMOKE else int(os.environ.get("RET_BENCH_QUERIES", "200"))
WARMUP = 2 if SMOKE else int(os.environ.get("RET_BENCH_WARMUP", "20"))
CHUNKS_PER_DOC = 20
VOCABULARY = 30_000
# The KB's model: its query embedding is part of every dense and hybrid search. RET_BENCH_MODEL=use-multilingual
# measures the model a KB starts with; the default is the one it searches with once upgraded (e5, 384-d).
MODEL = os.environ.get("RET_BENCH_MODEL", "multilingual-e5-small")
DIM = {"use-multilingual": 512, "multilingual-e5-small": 384}[MODEL]
SEED = 7
CORPORA = ("stopwords", "korean", "zipf")


def _vocabulary(rng: random.Random) -> list[str]:
    onsets = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "st", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou"]
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class Corpus:
    """English-like text: words drawn from a Zipf distribution over a synthetic vocabulary."""

    language = "en"

    def __init__(self, seed: int, mode: str = "stopwords"):
        self.mode = mode
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.words, self.cum = self._distribution()

    def _distribution(self):
        words = _vocabulary(self.rng)
        self.rng.shuffle(words)
        if self.mode == "stopwords":
            words[: len(ENGLISH_STOPWORDS)] = sorted(ENGLISH_STOPWORDS)
        ranks = np.arange(1, len(words) + 1)
        weights = 1.0 / ranks**1.07
        return words, np.cumsum(weights / weights.sum())

    def text(self, n_words: int) -> str:
        idx = np.searchsorted(self.cum, self.np_rng.random(n_words))
        return " ".join(self.words[min(i, len(self.words) - 1)] for i in idx)

    def vectors(self, n: int):
        v = self.np_rng.standard_normal((n, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def queries(self, kb, tenant, n: int) -> list[str]:
        """Questions made of words from a random chunk: 3-6 words, sometimes with a very common word."""
        from accounts.tenancy import tenant_scope
        from knowledge.models import Chunk

        rng = random.Random(SEED + 1)
        with tenant_scope(tenant):
            ids = list(Chunk.objects.filter(kb=kb).values_list("pk", flat=True)[:: max(1, CHUNKS // 2000)])
            sample = rng.sample(ids, min(n, len(ids)))
            texts = dict(Chunk.objects.filter(pk__in=sample).values_list("pk", "text"))
        out = []
        for pk in sample:
            words = texts[pk].split()
            picked = rng.sample(words, min(len(words), rng.randint(3, 6)))
            if rng.random() < 0.3:
                picked.append(self.words[rng.randint(0, 20)])
            out.append(" ".join(picked))
        return out


class KoreanCorpus(Corpus):
    """Korean text drawn word by word (eojeol: a word with its particles and endings, as written between
    spaces) from the word frequencies of the Korean passages in ../shared/eval, so the index sees Korean's real
    term statistics: common Hangul bigrams (particles, endings, 하다/있다 forms) in most chunks. Words are
    drawn independently (no topic structure: the hard case for pruning). Queries are the Korean development
    questions of the same sets. 60-180 words make chunks of ~300-900 characters, like the chunker's."""

    language = "ko"
    PASSAGE_SETS = ("ko_korquad_v1_dev", "ko_allganize_rag_subset", "xl_en2ko_msmarco")
    QUESTION_SETS = ("ko_korquad_v1_dev", "ko_allganize_rag_subset")

    @classmethod
    def missing(cls) -> str | None:
        """Why the corpus cannot be made here (None when it can)."""
        absent = [name for name in cls.PASSAGE_SETS if not (EVAL_DIR / name / "corpus.jsonl").exists()]
        return f"{EVAL_DIR} has no {', '.join(absent)}" if absent else None

    def _distribution(self):
        counts: Counter = Counter()
        for name in self.PASSAGE_SETS:
            with (EVAL_DIR / name / "corpus.jsonl").open(encoding="utf-8") as fh:
                for line in fh:
                    counts.update(json.loads(line)["text"].split())
        words = sorted(counts, key=lambda w: (-counts[w], w))
        weights = np.array([counts[w] for w in words], dtype=float)
        return words, np.cumsum(weights / weights.sum())

    def queries(self, kb, tenant, n: int) -> list[str]:
        questions = []
        for name in self.QUESTION_SETS:
            with (EVAL_DIR / name / "queries.jsonl").open(encoding="utf-8") as fh:
                questions.extend(json.loads(line)["text"] for line in fh if line.strip())
        rng = random.Random(SEED + 1)
        return rng.sample(questions, min(n, len(questions)))


HNSW_INDEX = f"chunk_embedding_hnsw_{DIM}"
HNSW_SQL = (  # the same index as knowledge migration 0002
    f"CREATE INDEX IF NOT EXISTS {HNSW_INDEX} ON knowledge_chunk USING hnsw ((embedding::vector({DIM})) "
    f"vector_cosine_ops) WITH (m = 16, ef_construction = 64) WHERE embedding_dim = {DIM}"
)


def _existing(slug: str, chunks: int):
    from accounts.models import Tenant
    from accounts.tenancy import system_scope
    from knowledge.models import Chunk, KnowledgeBase
    from knowledge.search.models import IndexStats

    with system_scope():
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            return None
        kb = KnowledgeBase.all_tenants.filter(tenant=tenant).first()
        stats = IndexStats.all_tenants.filter(kb=kb).first() if kb else None
        if kb and stats and stats.chunk_count == chunks and Chunk.all_tenants.filter(kb=kb).count() == chunks:
            return tenant, kb
        KnowledgeBase.all_tenants.filter(tenant=tenant).delete()  # rebuilt below, in the same tenant
        return None


def _build_tenant(slug: str, chunks: int, corpus: Corpus, label: str):
    """A tenant with one KB of `chunks` chunks (reused when it already has exactly that many)."""
    from accounts.models import Tenant
    from accounts.tenancy import system_scope, tenant_scope
    from knowledge.models import Chunk, Document, KnowledgeBase
    from knowledge.search.services import postings_index_documents

    with system_scope():
        tenant, _created = Tenant.objects.get_or_create(slug=slug, defaults={"name": f"Bench {label}"})
    started = time.perf_counter()
    with tenant_scope(tenant):
        kb = KnowledgeBase.objects.create(tenant=tenant, name="bench", language=corpus.language, embedding_model=MODEL,
                                          embedding_dim=DIM)
        docs_needed = (chunks + CHUNKS_PER_DOC - 1) // CHUNKS_PER_DOC
        made = 0
        for start in range(0, docs_needed, 250):
            with transaction.atomic():
                docs = Document.objects.bulk_create([
                    Document(tenant=tenant, kb=kb, title=corpus.text(4), filename=f"doc-{start + i}.txt",
                             sha256=f"{slug}-{start + i}", status=Document.Status.READY)
                    for i in range(min(250, docs_needed - start))
                ])
                rows = []
                for doc in docs:
                    for ordinal in range(min(CHUNKS_PER_DOC, chunks - made)):
                        rows.append((doc, ordinal, corpus.text(corpus.rng.randint(60, 180))))
                        made += 1
                vectors = corpus.vectors(len(rows))
                Chunk.objects.bulk_create([
                    Chunk(tenant=tenant, kb=kb, document=doc, ordinal=ordinal, text=text, embedding=vectors[i],
                          embedding_dim=DIM)
                    for i, (doc, ordinal, text) in enumerate(rows)
                ], batch_size=1000)
            postings_index_documents(tenant=tenant, kb=kb, document_ids=[d.pk for d in docs])
            print(f"  {label}: {made}/{chunks} chunks ({time.perf_counter() - started:.0f}s)", flush=True)
    return tenant, kb


def _clone_unmerged(tenant, kb, *, last_documents: int | None = None):
    """A KB beside `kb` with the same statistics and postings, laid out as indexing documents one by one leaves
    them before any merge: one fresh block per document and term (only for its `last_documents` newest
    documents when given; the rest stays merged). Chunks are not copied: BM25 reads only the index."""
    from accounts.tenancy import tenant_scope
    from knowledge.models import KnowledgeBase
    from knowledge.search import merging
    from knowledge.search.models import IndexedDocument, IndexStats
    from knowledge.search.postings import Postings, binary_cursor, cut, unpack

    with tenant_scope(tenant):
        clone = KnowledgeBase.objects.create(tenant=tenant, name="bench one by one", language=kb.language,
                                             embedding_model=MODEL, embedding_dim=DIM)
        docs = sorted(IndexedDocument.objects.filter(kb=kb).values_list("chunk_ids", "document_id"),
                      key=lambda row: max(row[0] or [0]))
        chunk_ids = np.concatenate([np.array(c, dtype=np.int64) for c, _d in docs])
        owner = np.concatenate([np.full(len(c), i) for i, (c, _d) in enumerate(docs)])
        order = np.argsort(chunk_ids)
        chunk_ids, owner = chunk_ids[order], owner[order]
        first_split = 0 if last_documents is None else len(docs) - last_documents
        split_docs = len(docs) - first_split
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO search_indexstats (tenant_id, kb_id, chunk_count, total_length, analyzer, version, "
                "average_idf, average_idf_version, fresh_documents, indexed_at) SELECT tenant_id, %s, chunk_count, "
                "total_length, analyzer, version, average_idf, average_idf_version, %s, indexed_at "
                "FROM search_indexstats WHERE kb_id = %s", [clone.pk, split_docs, kb.pk])
            cursor.execute(
                "INSERT INTO search_termstat (tenant_id, kb_id, term, df, max_tf, min_length) "
                "SELECT tenant_id, %s, term, df, max_tf, min_length FROM search_termstat WHERE kb_id = %s",
                [clone.pk, kb.pk])
        with connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT term FROM search_postingblock WHERE kb_id = %s ORDER BY term", [kb.pk])
            terms = [row[0] for row in cursor.fetchall()]
        for start in range(0, len(terms), 5000):
            with transaction.atomic(), binary_cursor() as cursor:
                cursor.execute("SELECT term, first_chunk, size, data FROM search_postingblock WHERE kb_id = %s "
                               "AND term = ANY(%s::text[]) ORDER BY term, first_chunk",
                               [kb.pk, terms[start:start + 5000]], binary=True)
                lists: dict[str, list] = {}
                for term, first, size, data in cursor.fetchall():
                    lists.setdefault(term, []).append(unpack(first, size, data))
                merged: dict[str, Postings] = {}
                fresh: list = []
                for term, parts in lists.items():
                    whole = Postings.concat(parts)
                    doc = owner[np.searchsorted(chunk_ids, whole.ids)]
                    kept = doc < first_split
                    if kept.any():
                        merged[term] = Postings(whole.ids[kept], whole.tfs[kept], whole.lengths[kept])
                    rest = ~kept
                    for d in np.unique(doc[rest]):
                        mine = doc == d
                        fresh.extend((term, block) for block in cut(Postings(whole.ids[mine], whole.tfs[mine],
                                                                             whole.lengths[mine])))
                merging.insert_blocks(cursor, tenant_id=tenant.pk, kb_id=clone.pk, postings=merged, fresh=False)
                merging._insert(cursor, tenant_id=tenant.pk, kb_id=clone.pk, rows=fresh, fresh=True)
        IndexStats.objects.filter(kb=clone).update(fresh_documents=split_docs)
    return clone


def _layout_digest(kb_id: int) -> tuple:
    """Blocks, fresh blocks and a digest of every block's place and contents."""
    from accounts.tenancy import system_scope

    with system_scope(), connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(*) FILTER (WHERE fresh), md5(string_agg(term || first_chunk || ':' "
                       "|| size || ':' || md5(data), ',' ORDER BY term, first_chunk)) FROM search_postingblock "
                       "WHERE kb_id = %s", [kb_id])
        return cursor.fetchone()


def measure_layouts(tenant, kb, queries: list[str]) -> dict:
    """BM25 latency on the layout live ingestion leaves before merging (every document fresh) next to the
    merged layout, query by query in one run; then the merge itself, and a merge of 10 fresh documents."""
    from accounts.tenancy import tenant_scope
    from knowledge.search.bm25 import KbParams, bm25_search
    from knowledge.search.merging import postings_merge_kb

    started = time.perf_counter()
    clone = _clone_unmerged(tenant, kb)
    print(f"  one-by-one layout written in {time.perf_counter() - started:.0f}s "
          f"(blocks, fresh, digest: {_layout_digest(clone.pk)[:2]} vs merged {_layout_digest(kb.pk)[:2]})", flush=True)
    times: dict[str, list[float]] = {"bm25 one-by-one": [], "bm25 merged": []}
    with tenant_scope(tenant):
        for i, query in enumerate(queries):
            for name, target in (("bm25 one-by-one", clone), ("bm25 merged", kb)):
                params = [KbParams(target.pk, target.language, 1.2, 0.75, 0.25)]
                t = time.perf_counter()
                bm25_search(tenant=tenant, kbs=params, query=query, limit=100)
                if i >= WARMUP:
                    times[name].append((time.perf_counter() - t) * 1000)
    started = time.perf_counter()
    postings_merge_kb(tenant=tenant, kb_id=clone.pk)
    merge_all_s = time.perf_counter() - started
    same = _layout_digest(clone.pk)[2] == _layout_digest(kb.pk)[2]
    with tenant_scope(tenant):
        clone.delete()
    clone = _clone_unmerged(tenant, kb, last_documents=10)
    started = time.perf_counter()
    postings_merge_kb(tenant=tenant, kb_id=clone.pk)
    merge_10_s = time.perf_counter() - started
    same = same and _layout_digest(clone.pk)[2] == _layout_digest(kb.pk)[2]
    with tenant_scope(tenant):
        clone.delete()
    print()
    print(f"{'layout':<22} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name, values in times.items():
        print(f"{name:<22} {pct(values, 50):>8.1f} {pct(values, 95):>8.1f} {statistics.mean(values):>8.1f}")
    print(f"merging every document's fresh blocks: {merge_all_s:.1f}s; merging 10 fresh documents: "
          f"{merge_10_s:.2f}s; merged layout equals the bulk load's: {same}")
    return {"bm25_one_by_one_p95_ms": round(pct(times["bm25 one-by-one"], 95), 2),
            "bm25_merged_p95_ms": round(pct(times["bm25 merged"], 95), 2),
            "merge_all_s": round(merge_all_s, 1), "merge_10_documents_s": round(merge_10_s, 2),
            "merged_equals_bulk": same}


def corpus_for(mode: str, seed: int) -> Corpus:
    return KoreanCorpus(seed, mode) if mode == "korean" else Corpus(seed, mode)


def database_for(mode: str) -> str:
    """One database per corpus: the HNSW index and the tables then hold only that corpus's 120k chunks."""
    base = os.environ.get("RET_BENCH_DB", "ragdesk_ret") + ("" if MODEL == "use-multilingual" else "_e5")
    return base if mode == "stopwords" else f"{base}_{mode}"


def run_corpus(mode: str, layouts: bool = False) -> dict:
    """Build (or reuse) the corpus's data, measure every path, print the table; returns the figures."""
    use_bench_database(database_for(mode), smoke=SMOKE)
    django.setup()
    from accounts.tenancy import system_scope, tenant_scope
    from knowledge.search import dense as dense_module
    from knowledge.search.bm25 import KbParams, bm25_search
    from knowledge.search.dense import dense_search, embed_query, vector_literal
    from knowledge.search.selectors import search

    call_command("migrate", verbosity=0)
    print(f"corpus {mode}: {CHUNKS} chunks in one KB + {OTHER_TENANTS} other tenants x {OTHER_CHUNKS} chunks",
          flush=True)
    corpus = corpus_for(mode, SEED)
    suffix = "" if mode == "zipf" else f"-{mode}"
    main_slug = f"bench-retrieval-main{suffix}"
    wanted = [(main_slug, CHUNKS, SEED, "main")] + [
        (f"bench-retrieval-other-{i}{suffix}", OTHER_CHUNKS, SEED + 100 + i, f"other {i}") for i in range(OTHER_TENANTS)]
    built = {slug: _existing(slug, n) for slug, n, _seed, _label in wanted}
    missing = [w for w in wanted if built[w[0]] is None]
    if missing:
        # Bulk load: inserting 100k rows into a live HNSW index costs ~15 ms each on two busy cores; building
        # the index once afterwards is many times faster (the same index definition as the migration).
        with system_scope(), connection.cursor() as cursor:  # DDL runs in the system scope only (accounts.rls)
            cursor.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX}")
        for slug, n, seed, label in missing:
            built[slug] = _build_tenant(slug, n, corpus if label == "main" else corpus_for(mode, seed), label)
        started = time.perf_counter()
        with system_scope(), connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '1GB'")
            cursor.execute(HNSW_SQL)
        print(f"  HNSW index built in {time.perf_counter() - started:.0f}s", flush=True)
    tenant, kb = built[main_slug]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE knowledge_chunk")
        cursor.execute("ANALYZE search_postingblock")
        cursor.execute("ANALYZE search_termstat")

    queries = corpus.queries(kb, tenant, QUERIES + WARMUP)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times: dict[str, list[float]] = {"hybrid": [], "bm25": [], "dense": [], "pgvector_bare": []}
    bare_sql = (
        f"SELECT id FROM knowledge_chunk WHERE tenant_id = %s AND kb_id = %s AND embedding_dim = {DIM} "
        f"ORDER BY embedding::vector({DIM}) <=> %s::vector({DIM}) LIMIT 8"
    )
    params = [KbParams(kb.pk, kb.language, 1.2, 0.75, 0.25)]
    traces: list[dict] = []
    with tenant_scope(tenant):
        for i, query in enumerate(queries):
            record = i >= WARMUP
            # hybrid: the whole selector (query embedding included, memo cache cleared)
            dense_module._QUERY_CACHE.clear()
            t = time.perf_counter()
            search(tenant=tenant, kb_ids=[kb.pk], query=query, k=8)
            hybrid_ms = (time.perf_counter() - t) * 1000
            trace: dict = {}
            t = time.perf_counter()
            bm25_search(tenant=tenant, kbs=params, query=query, limit=100, trace=trace)
            bm25_ms = (time.perf_counter() - t) * 1000
            dense_module._QUERY_CACHE.clear()
            t = time.perf_counter()
            vector = embed_query(tenant=tenant, model=MODEL, text=query)
            dense_search(tenant=tenant, kb_ids=[kb.pk], dim=DIM, vector=vector, limit=100)
            dense_ms = (time.perf_counter() - t) * 1000
            literal = vector_literal(vector)
            t = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(bare_sql, [tenant.pk, kb.pk, literal])
                cursor.fetchall()
            bare_ms = (time.perf_counter() - t) * 1000
            if record:
                traces.append(trace)
                times["hybrid"].append(hybrid_ms)
                times["bm25"].append(bm25_ms)
                times["dense"].append(dense_ms)
                times["pgvector_bare"].append(bare_ms)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print()
    print(f"{'path (' + mode + ')':<22} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name, values in times.items():
        print(f"{name:<22} {pct(values, 50):>8.1f} {pct(values, 95):>8.1f} {statistics.mean(values):>8.1f}")
    postings = sum(t.get("postings", 0) for t in traces)
    scanned = sum(t["scanned_postings"] if t.get("pruned") else t.get("postings", 0) for t in traces)
    print(f"BM25 top-100: {sum(1 for t in traces if t.get('pruned'))} of {len(traces)} queries pruned (MaxScore), "
          f"{sum(1 for t in traces if t.get('fallback'))} all-common-word queries scored in one scan; postings "
          f"of the query terms {postings / max(1, len(traces)):.0f} per query, scanned "
          f"{scanned / max(1, len(traces)):.0f} ({scanned / max(1, postings):.0%})")
    print(f"queries: {len(times['hybrid'])}; process max RSS {rss_before:.0f} MB before the queries, "
          f"{rss_after:.0f} MB after (search keeps no KB data in memory)")
    figures = {}
    for name, values in times.items():
        figures[f"{name}_p95_ms"] = round(pct(values, 95), 2)
    for name, values in times.items():
        figures[f"{name}_p50_ms"] = round(pct(values, 50), 2)
    figures.update(chunks=CHUNKS, other_tenant_chunks=OTHER_TENANTS * OTHER_CHUNKS, text_mode=mode,
                   bm25_scanned_postings_share=round(scanned / max(1, postings), 3))
    if layouts:
        figures.update(measure_layouts(tenant, kb, queries))
    return figures


def _run_child(mode: str, layouts: bool) -> dict:
    """One corpus in a process of its own (Django is bound to one database per process); its JSON line."""
    proc = subprocess.run([sys.executable, __file__, "--corpus", mode, *(["--layouts"] if layouts else []),
                           *(["--smoke"] if SMOKE else [])], stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the {mode} corpus run failed (exit {proc.returncode})")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=CORPORA, default=os.environ.get("RET_BENCH_TEXT"),
                        help="measure one corpus in this process (default: stopwords and korean)")
    parser.add_argument("--layouts", action="store_true",
                        help="also measure BM25 on the unmerged one-by-one layout and time the merges (minutes)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.corpus:
        if args.corpus == "korean" and KoreanCorpus.missing():
            print(f"korean corpus skipped: {KoreanCorpus.missing()}", flush=True)
            print(json.dumps({"text_mode": "korean", "skipped": KoreanCorpus.missing()}))
            return
        print(json.dumps(run_corpus(args.corpus, layouts=args.layouts)))
        return
    english = _run_child("stopwords", args.layouts)
    korean = _run_child("korean", args.layouts)
    print(f"\n{'corpus':<10} {'BM25 p50/p95':>14} {'dense p50/p95':>14} {'hybrid p50/p95':>15}   targets: BM25 p95 <= 30 ms,"
          " hybrid p95 <= 60 ms")
    for name, figures in (("english", english), ("korean", korean)):
        if figures.get("skipped"):
            print(f"{name:<10} skipped: {figures['skipped']}")
            continue
        cells = [f"{figures[f'{path}_p50_ms']}/{figures[f'{path}_p95_ms']}" for path in ("bm25", "dense", "hybrid")]
        print(f"{name:<10} {cells[0]:>14} {cells[1]:>14} {cells[2]:>15}")
    combined = dict(english)
    if korean.get("skipped"):
        combined.update(ko_hybrid_p95_ms=None, ko_bm25_p95_ms=None, ko_skipped=korean["skipped"])
    else:
        combined.update({f"ko_{key}": value for key, value in korean.items() if key != "text_mode"})
    print(json.dumps(combined))


if __name__ == "__main__":
    main()
