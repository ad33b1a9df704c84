"""Knowledge bases and documents: the writes. Views, the API, commands and the demo all come through here.

Processing is asynchronous: creating or re-indexing a document queues it and, once the transaction commits,
asks the fair dispatcher (knowledge.pipeline) to hand work to the Celery "ingest" queue. `document_process`
runs the same pipeline inline, for evaluation loaders and `manage.py ingest --inline`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import PurePath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from accounts.errors import AppError
from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from config import replicas
from knowledge import pipeline, selectors, vectors
from knowledge.embeddings import available_models, embedding_dimension, split_name
from knowledge.models import Document, KnowledgeBase, VectorUpgrade
from knowledge.parsers import UnsupportedFile, format_for, sniff
from knowledge.search import services as search

log = logging.getLogger(__name__)

SNIFF_BYTES = 65536
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 200, 8000


class UploadRejected(AppError):
    """An upload refused before anything was stored; `code` says why (unsupported_type, empty, bad_file)."""

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message, code=code, fields={"file": [message]} if self.status == 400 else None)


class UploadTooLarge(UploadRejected):
    code, status = "too_large", 413


class NotRetryable(AppError):
    """Only a failed document can be run again."""

    code, status = "conflict", 409


def max_upload_bytes() -> int:
    return settings.INGEST_MAX_UPLOAD_MB * 1024 * 1024


def too_large_message() -> str:
    return _("The file is larger than the %(mb)s MB limit.") % {"mb": settings.INGEST_MAX_UPLOAD_MB}


# ------------------------------------------------------------------ knowledge bases


def _validate_chunking(chunk_size: int, chunk_overlap: int) -> None:
    errors = {}
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        errors["chunk_size"] = _("Chunk size must be between %(lo)s and %(hi)s characters.") % {
            "lo": MIN_CHUNK_SIZE, "hi": MAX_CHUNK_SIZE}
    elif not 0 <= chunk_overlap <= chunk_size // 2:
        errors["chunk_overlap"] = _("Overlap must be between 0 and half the chunk size.")
    if errors:
        raise ValidationError(errors)


def _validate_model(*, tenant: Tenant, model: str, allow_any_model: bool) -> int:
    if not allow_any_model and model not in available_models():
        raise ValidationError({"embedding_model": _("Choose one of: %(list)s.") % {"list": ", ".join(available_models())}})
    # OpenAI is a cloud provider; the gateway checks "gateway:" targets at each call.
    if model.startswith("openai:") and not tenant.allows_model(is_local=False):
        raise ValidationError({"embedding_model": _("This team allows local models only.")})
    try:
        return embedding_dimension(model)
    except Exception as exc:  # unknown backend, model files missing...
        raise ValidationError({"embedding_model": _("This embedding model is not available: %(err)s") % {
            "err": exc}}) from exc


def _validate_retrieval(retrieval) -> dict:
    """Retrieval settings are an object of named settings (knowledge.search validates the values)."""
    if retrieval is None:
        return {}
    if not isinstance(retrieval, dict):
        raise ValidationError({"retrieval": _("Retrieval settings must be an object of named settings.")})
    return retrieval


def kb_create(*, tenant: Tenant, name: str, description: str = "", language: str = "auto",
              embedding_model: str | None = None, chunk_size: int = 900, chunk_overlap: int = 120,
              retrieval: dict | None = None, created_by=None, allow_any_model: bool = False) -> KnowledgeBase:
    """`allow_any_model`: operators (management commands, benchmarks) may name models outside EMBEDDING_MODELS."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": _("A name is required.")})
    model = embedding_model or available_models()[0]
    retrieval = _validate_retrieval(retrieval)
    _validate_chunking(chunk_size, chunk_overlap)
    dim = _validate_model(tenant=tenant, model=model, allow_any_model=allow_any_model)
    if language not in KnowledgeBase.Language.values:
        raise ValidationError({"language": _("Unknown language.")})
    with tenant_scope(tenant):
        if KnowledgeBase.objects.filter(tenant=tenant, name__iexact=name).exists():
            raise ValidationError({"name": _("A knowledge base with this name already exists.")})
        kb = KnowledgeBase(tenant=tenant, name=name, description=description, language=language,
                           embedding_model=model, embedding_dim=dim, chunk_size=chunk_size,
                           chunk_overlap=chunk_overlap, retrieval=retrieval, created_by=created_by)
        try:
            with transaction.atomic():
                kb.save()
        except IntegrityError as exc:
            raise ValidationError({"name": _("A knowledge base with this name already exists.")}) from exc
    return kb


def kb_update(*, tenant: Tenant, kb: KnowledgeBase, allow_any_model: bool = False, **changes) -> KnowledgeBase:
    """Change settings. New chunking re-indexes every document of the KB (with the new embedding model, when one
    comes with it); a new embedding model alone re-embeds the chunks in the background and switches over when
    done (knowledge.vectors). Naming the model the KB has stops an upgrade under way."""
    allowed = {"name", "description", "language", "retrieval", "embedding_model", "chunk_size", "chunk_overlap"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"kb_update: unknown fields {sorted(unknown)}")
    with tenant_scope(tenant):
        reindex = False
        if "name" in changes:
            name = (changes["name"] or "").strip()
            if not name:
                raise ValidationError({"name": _("A name is required.")})
            clash = KnowledgeBase.objects.filter(tenant=tenant, name__iexact=name).exclude(pk=kb.pk).exists()
            if clash:
                raise ValidationError({"name": _("A knowledge base with this name already exists.")})
            kb.name = name
        if "description" in changes:
            kb.description = changes["description"] or ""
        if "retrieval" in changes:
            kb.retrieval = _validate_retrieval(changes["retrieval"])
        if "language" in changes:
            if changes["language"] not in KnowledgeBase.Language.values:
                raise ValidationError({"language": _("Unknown language.")})
            kb.language = changes["language"]
        size = changes.get("chunk_size", kb.chunk_size)
        overlap = changes.get("chunk_overlap", kb.chunk_overlap)
        if (size, overlap) != (kb.chunk_size, kb.chunk_overlap):
            _validate_chunking(size, overlap)
            kb.chunk_size, kb.chunk_overlap = size, overlap
            reindex = True
        model = changes.get("embedding_model")
        upgrading_to = selectors.kb_vectors(tenant=tenant, kb=kb)["upgrading_to"]
        if model == upgrading_to or (model == kb.embedding_model and upgrading_to is None):
            model = None  # no change (the KB's own model while an upgrade runs stops it, below)
        dim = kb.embedding_dim
        if model and model != kb.embedding_model:
            dim = _validate_model(tenant=tenant, model=model, allow_any_model=allow_any_model)
        with transaction.atomic():
            try:
                with transaction.atomic():
                    # Never the model fields from this instance: a vector switch may have changed them since.
                    kb.save(update_fields=["name", "description", "language", "retrieval", "chunk_size",
                                           "chunk_overlap", "updated_at"])
            except IntegrityError as exc:
                raise ValidationError({"name": _("A knowledge base with this name already exists.")}) from exc
            replicas.note_write(tenant_id=tenant.pk)  # its next search uses the new settings
            if model and (reindex or model == kb.embedding_model):
                # The documents are embedded anew anyway (or the KB keeps its model): no upgrade needed.
                KnowledgeBase.objects.filter(pk=kb.pk).update(embedding_model=model, embedding_dim=dim)
                kb.embedding_model, kb.embedding_dim = model, dim
                vectors.pin(tenant=tenant, kb=kb)
            elif model:
                vectors.request(tenant=tenant, kb=kb, model=model, dim=dim, origin=VectorUpgrade.Origin.ADMIN)
            if reindex:
                _requeue(Document.objects.filter(kb=kb))
    return kb


def _requeue(documents) -> int:
    """New version for each document: any running worker's writes become no-ops, the dispatcher picks them up."""
    count = documents.update(
        version=F("version") + 1, status=Document.Status.QUEUED, dispatched_at=None, retry_at=None, claim_token="",
        attempts=0, error="", chunks_embedded=0, finished_at=None, updated_at=timezone.now(),
    )
    if count:
        transaction.on_commit(pipeline.request_dispatch)
    return count


def kb_reindex(*, tenant: Tenant, kb: KnowledgeBase) -> int:
    with tenant_scope(tenant), transaction.atomic():
        return _requeue(Document.objects.filter(kb=kb))


def kb_delete(*, tenant: Tenant, kb: KnowledgeBase) -> None:
    with tenant_scope(tenant), transaction.atomic():
        docs = list(Document.objects.filter(kb=kb).values_list("pk", "file"))
        kb.delete()  # its whole search index (blocks, statistics) goes with it (foreign keys cascade)
        replicas.note_write(tenant_id=tenant.pk)
        names = [name for _pk, name in docs if name]
        transaction.on_commit(lambda: _delete_files(names))


def _delete_files(names: list[str]) -> None:
    storage = Document._meta.get_field("file").storage
    for name in names:
        try:
            storage.delete(name)
        except Exception:  # an orphaned file is harmless; a failed request is not
            log.warning("could not delete stored file %s", name, exc_info=True)


# ------------------------------------------------------------------ documents


def _read_head(upload: File) -> bytes:
    upload.seek(0)
    head = upload.read(SNIFF_BYTES)
    upload.seek(0)
    return head


def _sha256(upload: File) -> str:
    digest = hashlib.sha256()
    upload.seek(0)
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def document_create(*, tenant: Tenant, kb: KnowledgeBase, upload: File, filename: str | None = None,
                    title: str = "", uploaded_by=None, enqueue: bool = True) -> tuple[Document, bool]:
    """Store an uploaded file as a new document of `kb` and queue it. Returns (document, created): an upload
    identical (sha256) to a document already in the KB returns that document and created=False, unchanged.

    enqueue=False keeps the document away from the dispatcher for the caller to run `document_process`.
    Raises UploadRejected for unsupported, empty, binary or oversized files.
    """
    filename = PurePath(filename or getattr(upload, "name", "") or "document").name[:300]
    try:
        fmt = format_for(filename)
    except UnsupportedFile as exc:
        raise UploadRejected(str(exc), code="unsupported_type") from exc
    size = upload.size
    if size is None:
        upload.seek(0, 2)
        size = upload.tell()
        upload.seek(0)
    if size > max_upload_bytes():
        raise UploadTooLarge(too_large_message())
    if size == 0:
        raise UploadRejected(_("The file is empty."), code="empty")
    try:
        sniff(fmt, _read_head(upload))
    except UnsupportedFile as exc:
        raise UploadRejected(str(exc), code="bad_file") from exc
    digest = _sha256(upload)
    with tenant_scope(tenant):
        existing = Document.objects.filter(kb=kb, sha256=digest).first()
        if existing is not None:
            return existing, False
        document = Document(
            tenant=tenant, kb=kb, title=(title or filename)[:300], filename=filename, content_type=fmt.content_type,
            size=size, sha256=digest, uploaded_by=uploaded_by if getattr(uploaded_by, "pk", None) else None,
            dispatched_at=None if enqueue else timezone.now(),
        )
        document.file.save(filename, upload, save=False)
        try:
            with transaction.atomic():
                document.save()
        except IntegrityError:  # the same file uploaded twice at the same moment
            _delete_files([document.file.name])
            existing = Document.objects.filter(kb=kb, sha256=digest).first()
            if existing is None:
                raise
            return existing, False
        if enqueue:
            transaction.on_commit(pipeline.request_dispatch)
    return document, True


def document_create_from_text(*, tenant: Tenant, kb: KnowledgeBase, title: str, text: str,
                              filename: str | None = None, markdown: bool = False, uploaded_by=None,
                              enqueue: bool = True) -> tuple[Document, bool]:
    """A document from a string (stored as a .txt/.md file so it can be re-indexed like any upload)."""
    ext = ".md" if markdown else ".txt"
    name = filename or f"{slugify(title, allow_unicode=True)[:80] or 'document'}{ext}"
    return document_create(tenant=tenant, kb=kb, upload=ContentFile(text.encode("utf-8"), name=name), filename=name,
                           title=title, uploaded_by=uploaded_by, enqueue=enqueue)


def document_process(*, tenant: Tenant, document_id: int, wait_seconds: float = 600.0) -> Document:
    """Run the pipeline for a queued document in this process, now (no worker needed). Returns the document,
    ready or failed (or still queued when a transient error asked for a later retry). When a worker is already
    processing it, waits up to `wait_seconds` for that run to end."""
    outcome = pipeline.run_document(document_id=document_id, force=True)
    with tenant_scope(tenant):
        document = Document.objects.select_related("kb").get(pk=document_id)
        # A worker got to it first: wait for that run rather than report a half-done document.
        deadline = time.monotonic() + wait_seconds
        while outcome == "skipped" and document.status in pipeline.IN_PROGRESS and time.monotonic() < deadline:
            time.sleep(0.2)
            document.refresh_from_db()
        return document


def document_reindex(*, tenant: Tenant, document: Document) -> Document:
    with tenant_scope(tenant), transaction.atomic():
        _requeue(Document.objects.filter(pk=document.pk))
        document.refresh_from_db()
    return document


def document_retry(*, tenant: Tenant, document: Document) -> Document:
    """Run a failed document again (a new version, so nothing of the failed run is reused)."""
    if document.status != Document.Status.FAILED:
        raise NotRetryable(_("Only failed documents can be retried."))
    return document_reindex(tenant=tenant, document=document)


def document_delete(*, tenant: Tenant, document: Document) -> None:
    with tenant_scope(tenant), transaction.atomic():
        locked = Document.objects.select_for_update().filter(pk=document.pk).first()
        if locked is None:
            return
        search.postings_delete_document(tenant=tenant, document_id=locked.pk)
        name = locked.file.name if locked.file else ""
        locked.delete()
        replicas.note_write(tenant_id=tenant.pk)  # its chunks too, indexed or not
        if name:
            transaction.on_commit(lambda: _delete_files([name]))


def model_label(name: str) -> str:
    base, dim = split_name(name)
    return f"{base} ({dim}-d)" if dim else base
