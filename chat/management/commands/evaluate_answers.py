"""evaluate_answers DATASET_DIR [--mode extractive|generative ...] [--limit N] [--json PATH]

Loads a BEIR-style folder with gold answers (corpus.jsonl, queries.jsonl, qrels.tsv, answers.jsonl) into a
scratch tenant, asks every question that has a gold answer through the real answer pipeline in each mode
and prints answer_contains_gold, citation_precision, cited_share, answer_chars_p50 and added_ms_p95.
The metrics are defined in chat/answer_eval.py. The scratch tenant is deleted afterwards; --keep leaves it
(its slug is printed) with one assistant per mode, to read the answers in the app.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from config.commands import SchemaCommand

MODES = ["extractive", "generative", "generative_fallback"]


def _setting(item: str) -> tuple[str, object]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise CommandError(f"--assistant-setting needs KEY=VALUE, got {item!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw.strip()
    return key.strip(), value


class Command(SchemaCommand):
    help = "Evaluate answers on a BEIR-style folder with answers.jsonl (gold answers)."

    def add_arguments(self, parser):
        parser.add_argument("dataset_dir")
        parser.add_argument("--mode", action="append", choices=MODES,
                            help="answer mode; repeatable (default: extractive)")
        parser.add_argument("--limit", type=int, default=None,
                            help="only the first N questions with gold answers (queries.jsonl order)")
        parser.add_argument("--json", dest="json_path", help="write {mode: {metric: value}} here")
        parser.add_argument("--details", dest="details_path",
                            help="write one JSON line per question (answer, golds, citations) here")
        parser.add_argument("--target", default="",
                            help="answer model for generative modes, e.g. local/smollm2 (default: the platform's)")
        parser.add_argument("--assistant-setting", action="append", default=[], metavar="KEY=VALUE",
                            help="assistant field, JSON value, e.g. --assistant-setting context_window=4096")
        parser.add_argument("--embedding-model", default="", help="default: chosen by the corpus language")
        parser.add_argument("--keep", action="store_true", help="keep the scratch tenant (default: delete it)")

    def handle(self, *args, **opts):
        os.environ.setdefault("TQDM_DISABLE", "1")
        from chat.answer_eval import (
            ModeRun,
            common_errors,
            evaluate_folder,
            format_table,
            headline,
            outcome_rows,
        )
        from knowledge.search.beir import DatasetError

        if opts["limit"] is not None and opts["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        settings = dict(_setting(item) for item in opts["assistant_setting"])
        runs = [ModeRun(mode=mode, limit=opts["limit"], target=opts["target"], assistant_settings=settings)
                for mode in dict.fromkeys(opts["mode"] or ["extractive"])]
        try:
            folder = evaluate_folder(dataset_dir=opts["dataset_dir"], runs=runs, keep=opts["keep"],
                                     embedding_model=opts["embedding_model"], progress=self._progress())
        except (DatasetError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        except ValidationError as exc:  # a bad --assistant-setting
            raise CommandError(f"assistant settings: {exc}") from exc
        self.stdout.write("")
        self.stdout.write(format_table(folder.dataset, folder.results))
        for line in common_errors(folder.outcomes):
            self.stdout.write(f"failed answers, {line}")
        if opts["keep"]:
            self.stdout.write(f"kept the scratch tenant {folder.tenant_slug}")
        if opts["json_path"]:
            path = Path(opts["json_path"])
            path.write_text(json.dumps(headline(folder.results), indent=2) + "\n")
            self.stdout.write(f"wrote {path}")
        if opts["details_path"]:
            path = Path(opts["details_path"])
            with path.open("w", encoding="utf-8") as fh:
                for row in outcome_rows(folder.outcomes):
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.stdout.write(f"wrote {path}")

    def _progress(self):
        last = {"t": 0.0}

        def report(label: str, done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last["t"] > 10:
                last["t"] = now
                self.stderr.write(f"  {label}: {done}/{total}")

        return report

