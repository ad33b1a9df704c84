import uuid
from pathlib import PurePath

from django.conf import settings
from django.db import models
from django.utils.text import get_valid_filename
from django.utils.translation import gettext_lazy as _
from pgvector.django import VectorField

from accounts.models import TenantModel
from knowledge.parsers.base import describe_warning

# Dimensions with a partial HNSW index (see migration 0002). A KB whose embedding model has another
# dimension still works, with exact (sequential) vector search.
INDEXED_DIMENSIONS = (384, 512, 768, 1024, 1536)


class KnowledgeBase(TenantModel):
    class Language(models.TextChoices):
        AUTO = "auto", _("Detect")
        KOREAN = "ko", _("Korean")
        ENGLISH = "en", _("English")

    name = models.CharField(_("name"), max_length=120)
    description = models.TextField(_("description"), blank=True)
    language = models.CharField(_("language"), max_length=8, choices=Language.choices, default=Language.AUTO)
    # The model of the chunks' vectors (`Chunk.embedding`): vectors of different models are not comparable, so a
    # new model re-embeds every chunk in the background and switches over at once (knowledge.vectors).
    embedding_model = models.CharField(_("embedding model"), max_length=200)
    embedding_dim = models.PositiveIntegerField()
    chunk_size = models.PositiveIntegerField(_("chunk size"), default=900)
    chunk_overlap = models.PositiveIntegerField(_("chunk overlap"), default=120)
    # Retrieval settings (weights, k, expansion/compression switches...), owned by knowledge.search.
    retrieval = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_kb_name_per_tenant")]

    def __str__(self) -> str:
        return self.name


def document_upload_to(instance: "Document", filename: str) -> str:
    """Originals live under their tenant and KB, so a tenant's files can be listed or purged together."""
    name = get_valid_filename(PurePath(filename).name)[-120:] or "document"
    return f"tenants/{instance.tenant_id}/kb/{instance.kb_id}/{uuid.uuid4().hex}/{name}"


class Document(TenantModel):
    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        PARSING = "parsing", _("Parsing")
        CHUNKING = "chunking", _("Chunking")
        EMBEDDING = "embedding", _("Embedding")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(_("title"), max_length=300)
    filename = models.CharField(_("file name"), max_length=300)
    content_type = models.CharField(max_length=120, blank=True)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to=document_upload_to, max_length=500, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    # What reading the file took, e.g. [{"code": "undecodable", "count": 12}]: stored as codes, shown in each
    # reader's language (warning_messages).
    warnings = models.JSONField(default=list, blank=True)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_embedded = models.PositiveIntegerField(default=0)
    page_count = models.PositiveIntegerField(null=True, blank=True)
    # Bumped by every (re)index request; a worker only writes results for the version it claimed.
    version = models.PositiveIntegerField(default=1)
    attempts = models.PositiveIntegerField(default=0)  # claims of the current version (crashes count too)
    # Work queue state (knowledge.pipeline): the database is the queue, Celery only carries the wake-ups.
    dispatched_at = models.DateTimeField(null=True, blank=True)  # a task message is out for this version
    retry_at = models.DateTimeField(null=True, blank=True)  # transient failure: not before this time
    claim_token = models.CharField(max_length=32, blank=True)  # the worker run that owns this version
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # last sign of life of that run
    chunks_version = models.PositiveIntegerField(default=0)  # version of the chunks currently stored
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["kb", "sha256"], name="uniq_document_content_per_kb")]
        indexes = [
            models.Index(fields=["status", "updated_at"], name="document_status_updated"),
            # The fair dispatcher's scan: waiting documents per tenant, oldest first.
            models.Index(
                fields=["tenant", "created_at"], name="document_waiting",
                condition=models.Q(status="queued", dispatched_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.title

    IN_PROGRESS = ("parsing", "chunking", "embedding")

    @property
    def is_active(self) -> bool:
        """Queued or being processed: the page keeps polling while any document is active."""
        return self.status not in (self.Status.READY, self.Status.FAILED)

    @property
    def warning_messages(self) -> list[str]:
        return [describe_warning(w) for w in self.warnings or []]

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.READY:
            return 100
        if not self.chunks_total:
            return 0
        return min(100, int(100 * self.chunks_embedded / self.chunks_total))


class Chunk(TenantModel):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True)
    heading_path = models.CharField(max_length=500, blank=True)
    char_start = models.PositiveIntegerField(default=0)
    char_end = models.PositiveIntegerField(default=0)
    token_count = models.PositiveIntegerField(default=0)
    # Any dimension; searched through a per-dimension partial HNSW index on embedding::vector(dim).
    embedding = VectorField(null=True, blank=True)
    embedding_dim = models.PositiveSmallIntegerField(null=True, blank=True)
    # A vector upgrade's vectors (the KB's VectorUpgrade model), never searched: they replace `embedding` for the
    # whole KB at once when every chunk has one.
    embedding_next = VectorField(null=True, blank=True)
    embedding_next_dim = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["document", "ordinal"], name="uniq_chunk_ordinal")]
        indexes = [models.Index(fields=["kb", "document"], name="chunk_kb_document")]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


class VectorUpgrade(TenantModel):
    """A KB's vectors being re-embedded with another model (knowledge.vectors), as a job of config.jobs: one
    row per KB, kept once done so the KB page can say where its vectors came from."""

    class Status(models.TextChoices):
        WAITING = "waiting", _("Waiting")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    class Origin(models.TextChoices):
        AUTO = "auto", _("Automatic")  # EMBEDDING_UPGRADE_MODEL
        ADMIN = "admin", _("Chosen by an admin")  # never upgraded automatically afterwards

    kb = models.OneToOneField(KnowledgeBase, on_delete=models.CASCADE, related_name="vector_upgrade")
    model = models.CharField(max_length=200)  # the target
    dim = models.PositiveIntegerField()
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.AUTO)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.WAITING, db_index=True)
    error = models.TextField(blank=True)
    chunks_done = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    dispatched_at = models.DateTimeField(null=True, blank=True)  # a task message is out
    retry_at = models.DateTimeField(null=True, blank=True)  # a failed run: not before this time
    claim_token = models.CharField(max_length=32, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.kb_id} -> {self.model}"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.WAITING, self.Status.RUNNING)

    @property
    def percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return min(99, int(100 * self.chunks_done / self.chunks_total)) if self.chunks_total else 0
