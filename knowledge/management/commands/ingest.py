"""Import files or folders (recursively) into a knowledge base, with a progress bar.

    python manage.py ingest --tenant acme --kb "Handbook" ./docs
    python manage.py ingest --tenant acme --kb "Handbook" --create --model st:intfloat/multilingual-e5-base ./docs
    python manage.py ingest --tenant acme --kb "Handbook" --inline notes.md     # no worker needed

Files already in the knowledge base (same content) are reported as duplicates and left alone, so running the
command again on the same folder only adds what is new.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import CommandError
from tqdm import tqdm

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from config.commands import SchemaCommand
from knowledge import selectors, services
from knowledge.models import Document
from knowledge.parsers import FORMATS

STALL_HINT_SECONDS = 60


def collect(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(supported files, skipped files) under the given paths, hidden files and folders left out."""
    files: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise CommandError(f"{raw}: no such file or directory")
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            relative = candidate.relative_to(path) if path.is_dir() else Path(candidate.name)
            if any(part.startswith(".") for part in relative.parts):
                continue
            (files if candidate.suffix.lower() in FORMATS else skipped).append(candidate)
    return files, skipped


class Command(SchemaCommand):
    help = "Import files or folders (recursively) into a knowledge base of a tenant."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--kb", required=True, help="knowledge base name")
        parser.add_argument("--create", action="store_true", help="create the knowledge base when missing")
        parser.add_argument("--model", help="embedding model for --create (default: DEFAULT_EMBEDDING_MODEL)")
        parser.add_argument("--language", default="auto", choices=["auto", "ko", "en"])
        parser.add_argument("--inline", action="store_true",
                            help="process here, now, instead of queueing for the Celery workers")
        parser.add_argument("--no-wait", action="store_true", help="queue the files and exit")

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with slug {options['tenant']!r}")
        with tenant_scope(tenant):
            kb = self._kb(tenant, options)
            files, skipped = collect(options["paths"])
            if options["verbosity"] > 1:
                for path in skipped:
                    self.stderr.write(f"skipped (unsupported type): {path}")
            if not files:
                self.stdout.write("Nothing to import." + (f" {len(skipped)} files of unsupported types skipped."
                                                           if skipped else ""))
                return
            created, duplicates, rejected = self._upload(tenant, kb, files, inline=options["inline"])
            if options["inline"]:
                self._process_inline(tenant, created, options)
            elif not options["no_wait"]:
                self._wait(tenant, created, options)
            self._summary(tenant, created, duplicates, rejected, skipped, queued_only=options["no_wait"])

    def _kb(self, tenant, options):
        kb = selectors.kb_get_by_name(tenant=tenant, name=options["kb"])
        if kb is not None:
            return kb
        if not options["create"]:
            raise CommandError(f"No knowledge base {options['kb']!r} in {tenant.slug}; add --create to make it")
        try:
            kb = services.kb_create(tenant=tenant, name=options["kb"], embedding_model=options["model"],
                                    language=options["language"], allow_any_model=True)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"Created knowledge base {kb.name!r} ({kb.embedding_model}, {kb.embedding_dim}-d)")
        return kb

    def _upload(self, tenant, kb, files, *, inline):
        created: list[int] = []
        duplicates = 0
        rejected: list[tuple[Path, str]] = []
        for path in self._bar(files, "upload", unit="file"):
            try:
                with path.open("rb") as fh:
                    document, is_new = services.document_create(
                        tenant=tenant, kb=kb, upload=File(fh, name=path.name), filename=path.name, enqueue=not inline,
                    )
            except services.UploadRejected as exc:
                rejected.append((path, exc.message))
                continue
            if is_new:
                created.append(document.pk)
            else:
                duplicates += 1
        return created, duplicates, rejected

    def _bar(self, iterable=None, desc="", **kwargs):
        return tqdm(iterable, desc=desc, file=sys.stderr, disable=None, dynamic_ncols=True, **kwargs)

    def _process_inline(self, tenant, created, options):
        bar = self._bar(total=len(created), desc="index", unit="doc")
        chunks = 0
        for document_id in created:
            document = services.document_process(tenant=tenant, document_id=document_id)
            chunks += document.chunks_embedded
            bar.set_postfix(chunks=chunks)
            bar.update(1)
        bar.close()

    def _wait(self, tenant, created, options):
        if not created:
            return
        bar = self._bar(total=len(created), desc="index", unit="doc")
        done = 0
        last_change = time.monotonic()
        hinted = False
        while done < len(created):
            time.sleep(1.0)
            rows = Document.objects.filter(pk__in=created)
            now_done = rows.filter(status__in=[Document.Status.READY, Document.Status.FAILED]).count()
            embedded = sum(rows.values_list("chunks_embedded", flat=True))
            bar.set_postfix(chunks=embedded)
            bar.update(now_done - done)
            if now_done != done:
                done, last_change = now_done, time.monotonic()
            elif not hinted and time.monotonic() - last_change > STALL_HINT_SECONDS and not embedded:
                bar.write("No progress yet. Is a Celery worker consuming the 'ingest' queue? "
                          "(scripts/run-app starts one; or run this command with --inline)")
                hinted = True
        bar.close()

    def _summary(self, tenant, created, duplicates, rejected, skipped, *, queued_only):
        docs = Document.objects.filter(pk__in=created)
        ready = docs.filter(status=Document.Status.READY)
        failed = docs.filter(status=Document.Status.FAILED)
        chunks = sum(ready.values_list("chunks_total", flat=True))
        if queued_only:
            self.stdout.write(f"Queued {len(created)} documents.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Indexed {ready.count()} documents ({chunks} chunks)."))
        for document in failed:
            self.stdout.write(self.style.WARNING(f"failed: {document.filename}: {document.error}"))
        for path, message in rejected:
            self.stdout.write(self.style.WARNING(f"rejected: {path}: {message}"))
        extras = []
        if duplicates:
            extras.append(f"{duplicates} already present (duplicates, not indexed again)")
        if skipped:
            extras.append(f"{len(skipped)} skipped (unsupported type)")
        if extras:
            self.stdout.write("; ".join(extras) + ".")
