"""Vector upgrade cost: a ../shared/eval corpus ingested with the fast model, then upgraded to another one in the
background job's code path (knowledge.vectors), inline in this process with one thread.

    scripts/env-run nice -n 10 python bench/vector_upgrade.py [--dataset en_squad_v1.1_dev] [--limit 40]
    ... python bench/vector_upgrade.py --dataset ko_korquad_v1_dev --limit 20 --to multilingual-e5-small
    ... python bench/vector_upgrade.py --smoke  # 4 passages, database ragdesk_bench_vectors_smoke

The passages are written as markdown documents ("# title" + text, --per-file passages each) and ingested through
the same service as uploads, with --from (multilingual USE); the upgrade then re-embeds every chunk with --to and
switches. Prints a table, then one JSON line: chunks, ingest_chunks_per_s, upgrade_chunks_per_s,
upgrade_s_per_chunk, switch_ms (the switch's one transaction). Runs in a database of its own
(ragdesk_bench_vectors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

import django
from benchdb import use_bench_database  # bench/ is on sys.path when run as a script
from common import SMOKE_HELP, load_passages
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
EVAL_DIR = ROOT.parent / "shared" / "eval"
sys.path.insert(0, str(ROOT))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="en_squad_v1.1_dev")
    parser.add_argument("--limit", type=int, default=40, help="passages")
    parser.add_argument("--per-file", type=int, default=10, help="passages per document")
    parser.add_argument("--from", dest="source", default="use-multilingual")
    parser.add_argument("--to", dest="target", default="multilingual-e5-small")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.limit, args.per_file = 4, 2
    return args


def main():
    args = parse_args()
    use_bench_database("ragdesk_bench_vectors", smoke=args.smoke)
    os.environ["EMBEDDING_UPGRADE_MODEL"] = ""  # this run starts the upgrade itself
    django.setup()
    from accounts.models import Tenant
    from accounts.tenancy import tenant_scope
    from knowledge import services, vectors
    from knowledge.embeddings import get_embedder
    from knowledge.models import Chunk, KnowledgeBase

    call_command("migrate", verbosity=0)
    passages = load_passages(EVAL_DIR, args.dataset, args.limit)
    tenant = Tenant.objects.create(name="bench vectors", slug=f"bench-vectors-{uuid.uuid4().hex[:8]}")
    get_embedder(args.source).embed_documents(["warm up"])  # model loading is not what is measured
    get_embedder(args.target).embed_documents(["warm up"])
    switch_s = []
    original_switch = vectors.UpgradeRun._switch

    def timed_switch(run):
        began = time.perf_counter()
        try:
            return original_switch(run)
        finally:
            switch_s.append(time.perf_counter() - began)

    vectors.UpgradeRun._switch = timed_switch
    vectors.send_upgrade = lambda upgrade_id: None  # no message to a broker another app may share: run inline
    try:
        with tenant_scope(tenant):
            kb = services.kb_create(tenant=tenant, name="bench", embedding_model=args.source, allow_any_model=True)
            began = time.perf_counter()
            for start in range(0, len(passages), args.per_file):
                body = "\n\n".join(f"# {(p.get('title') or p['id']).strip()}\n\n{p['text'].strip()}"
                                   for p in passages[start:start + args.per_file])
                document, _ = services.document_create_from_text(tenant=tenant, kb=kb, title=f"part {start}",
                                                                 text=body, markdown=True, enqueue=False)
                services.document_process(tenant=tenant, document_id=document.pk)
            ingest_s = time.perf_counter() - began
            chunks = Chunk.objects.filter(kb=kb).count()
            upgrade = vectors.request(tenant=tenant, kb=kb, model=args.target)
        began = time.perf_counter()
        outcome = vectors.run_upgrade(upgrade_id=upgrade.pk)
        upgrade_s = time.perf_counter() - began
        with tenant_scope(tenant):
            switched = KnowledgeBase.objects.get(pk=kb.pk).embedding_model == args.target
    finally:
        vectors.UpgradeRun._switch = original_switch
        try:
            with tenant_scope(tenant):
                services.kb_delete(tenant=tenant, kb=kb)
            tenant.delete()
        except Exception as exc:  # results stand; say what was left behind
            print(f"cleanup failed ({exc!r}); tenant {tenant.slug} is left in the database", file=sys.stderr)

    result = {
        "dataset": args.dataset, "chunks": chunks, "from": args.source, "to": args.target, "outcome": outcome,
        "switched": switched, "ingest_chunks_per_s": round(chunks / ingest_s, 2),
        "upgrade_chunks_per_s": round(chunks / upgrade_s, 3), "upgrade_s_per_chunk": round(upgrade_s / chunks, 3),
        "switch_ms": round(1000 * switch_s[-1], 1) if switch_s else None,
    }
    print(f"{'dataset':<22}{'chunks':>7}{'ingest ' + args.source:>28}{'upgrade ' + args.target:>34}"
          f"{'s/chunk':>9}{'switch':>10}")
    print(f"{args.dataset:<22}{chunks:>7}{result['ingest_chunks_per_s']:>22.2f} ch/s"
          f"{result['upgrade_chunks_per_s']:>28.3f} ch/s{result['upgrade_s_per_chunk']:>9.3f}"
          f"{result['switch_ms'] or 0:>8.1f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
