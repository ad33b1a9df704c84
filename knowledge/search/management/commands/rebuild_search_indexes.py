"""rebuild_search_indexes [--dry-run]

Rebuilds the BM25 index of every KB written by another analyser version than this code's (IndexStats.analyzer
differs from analysis.AnalyzerConfig.signature): run it once after a deploy that changes text analysis, since
queries are analysed with the new version at once and would miss terms the old index lacks.
"""

from __future__ import annotations

from config.commands import SchemaCommand
from knowledge.search.services import index_rebuild_stale


class Command(SchemaCommand):
    help = "Rebuild the BM25 indexes written by an older analyser version."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="only list the stale indexes")

    def handle(self, *args, **opts):
        stale = index_rebuild_stale(dry_run=opts["dry_run"])
        verb = "stale" if opts["dry_run"] else "rebuilt"
        for tenant_id, kb_id in stale:
            self.stdout.write(f"tenant {tenant_id} KB {kb_id}: {verb}")
        self.stdout.write(f"{len(stale)} indexes {verb}")
