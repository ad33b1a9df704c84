"""The demo tenant's sample knowledge base (`manage.py seed_demo` sends accounts.signals.demo_tenant_ready).

Bilingual documents about ragdesk itself, in every supported format, from knowledge/sample_data/. Idempotent:
unchanged files are duplicates (same sha256) and skipped; a sample file that changed replaces its old version.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.core.files import File

from accounts.tenancy import tenant_scope
from knowledge import selectors, services
from knowledge.models import Document

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
SAMPLE_KB_NAME = "ragdesk guide · 가이드"
SAMPLE_KB_DESCRIPTION = (
    "Sample documents about ragdesk in English and Korean: ask the assistant about uploads, formats, limits, "
    "roles, API keys or the data policy. · ragdesk 사용법을 담은 한국어·영어 예제 문서입니다."
)


def sample_files() -> list[Path]:
    return sorted(p for p in SAMPLE_DIR.iterdir() if p.is_file() and not p.name.startswith("."))


def sample_kb_ensure(*, tenant, owner=None):
    with tenant_scope(tenant):
        kb = selectors.kb_get_by_name(tenant=tenant, name=SAMPLE_KB_NAME)
        if kb is None:
            kb = services.kb_create(tenant=tenant, name=SAMPLE_KB_NAME, description=SAMPLE_KB_DESCRIPTION,
                                    created_by=owner, allow_any_model=True)
        added = 0
        for path in sample_files():
            with path.open("rb") as fh:
                upload = File(fh, name=path.name)
                digest = services._sha256(upload)
                stale = Document.objects.filter(kb=kb, filename=path.name).exclude(sha256=digest)
                for old in stale:
                    services.document_delete(tenant=tenant, document=old)
                _document, created = services.document_create(
                    tenant=tenant, kb=kb, upload=upload, filename=path.name, uploaded_by=owner,
                )
                added += created
        return kb, added


def on_demo_tenant_ready(sender, tenant, owner=None, **kwargs) -> None:
    try:
        kb, added = sample_kb_ensure(tenant=tenant, owner=owner)
    except Exception:  # the demo must still come up without its sample KB
        log.exception("could not create the demo knowledge base")
        return
    if added:
        log.info("demo knowledge base %r: %s documents queued", kb.name, added)
