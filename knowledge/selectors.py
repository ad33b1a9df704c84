"""Knowledge bases and documents: the reads."""

from __future__ import annotations

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Greatest

from accounts.models import Tenant
from accounts.selectors import tenant_object_or_404, tenant_objects
from knowledge.embeddings import display_name
from knowledge.models import Chunk, Document, KnowledgeBase, VectorUpgrade


def kb_list(*, tenant: Tenant) -> QuerySet:
    active = ("queued", "parsing", "chunking", "embedding")
    return tenant_objects(KnowledgeBase, tenant=tenant).annotate(
        document_count=Count("documents", distinct=True),
        ready_count=Count("documents", filter=Q(documents__status="ready"), distinct=True),
        failed_count=Count("documents", filter=Q(documents__status="failed"), distinct=True),
        active_count=Count("documents", filter=Q(documents__status__in=active), distinct=True),
    ).select_related("vector_upgrade").order_by("name")


def kb_get(*, tenant: Tenant, kb_id) -> KnowledgeBase:
    return tenant_object_or_404(KnowledgeBase, tenant=tenant, pk=kb_id)


def kb_get_by_name(*, tenant: Tenant, name: str) -> KnowledgeBase | None:
    return tenant_objects(KnowledgeBase, tenant=tenant).filter(name__iexact=name).first()


def kb_stats(*, tenant: Tenant, kb: KnowledgeBase) -> dict:
    docs = tenant_objects(Document, tenant=tenant).filter(kb=kb)
    by_status = dict(docs.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {
        "documents": sum(by_status.values()),
        "by_status": by_status,
        "chunks": tenant_objects(Chunk, tenant=tenant).filter(kb=kb).count(),
    }


def kb_vectors(*, tenant: Tenant, kb: KnowledgeBase) -> dict:
    """Which vectors the KB's searches use, and the upgrade under way (knowledge.vectors): for its pages and API."""
    if KnowledgeBase.vector_upgrade.is_cached(kb):  # kb_list selected it: no query per KB
        upgrade = getattr(kb, "vector_upgrade", None)  # None: the KB has none
    else:
        upgrade = tenant_objects(VectorUpgrade, tenant=tenant).filter(kb=kb).first()
    active = upgrade is not None and upgrade.is_active
    filling = active and upgrade.model == kb.embedding_model  # new chunks' vectors, in the background
    upgrading = active and not filling
    return {
        "model": kb.embedding_model, "label": display_name(kb.embedding_model), "dim": kb.embedding_dim,
        "upgrading_to": upgrade.model if upgrading else None,
        "upgrading_to_label": display_name(upgrade.model) if upgrading else None,
        "filling": filling,
        "upgrade_status": upgrade.status if upgrade is not None else None,
        "upgrade_percent": upgrade.percent if active else None,
        "upgrade_error": upgrade.error if upgrade is not None and upgrade.status == VectorUpgrade.Status.FAILED else "",
    }


def document_list(*, tenant: Tenant, kb: KnowledgeBase | None = None, status: str | None = None) -> QuerySet:
    docs = tenant_objects(Document, tenant=tenant).select_related("kb", "uploaded_by")
    if kb is not None:
        docs = docs.filter(kb=kb)
    if status:
        docs = docs.filter(status=status)
    return docs.order_by("-created_at", "-id")


def document_get(*, tenant: Tenant, document_id) -> Document:
    return tenant_object_or_404(Document, tenant=tenant, pk=document_id)


def chunk_list(*, tenant: Tenant, document: Document) -> QuerySet:
    return tenant_objects(Chunk, tenant=tenant).filter(document=document).defer("embedding", "embedding_next").order_by("ordinal")


def chunk_usage(*, tenant: Tenant, exclude_document_id: int | None = None) -> int:
    """The tenant's chunks: stored ones, plus those that documents being embedded have still to write.
    `exclude_document_id`: leave out a document about to replace its own chunks."""
    stored = tenant_objects(Chunk, tenant=tenant)
    embedding = tenant_objects(Document, tenant=tenant).filter(status=Document.Status.EMBEDDING)
    if exclude_document_id is not None:
        stored = stored.exclude(document_id=exclude_document_id)
        embedding = embedding.exclude(pk=exclude_document_id)
    pending = embedding.aggregate(n=Sum(Greatest(F("chunks_total") - F("chunks_embedded"), 0)))["n"] or 0
    return stored.count() + pending
