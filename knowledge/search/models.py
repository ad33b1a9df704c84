"""Retrieval's own tables: the BM25 inverted index (posting blocks, term statistics, per-KB statistics) and the
evaluation feature (test questions, runs).

The inverted index is laid out for one query pattern: "the postings of these few terms in these KBs".
A PostingBlock row holds up to postings.BLOCK_SIZE postings of one (KB, term), packed (knowledge/search/
postings.py), so a query reads one short index range per (KB, term) and never the rest of the KB. Indexing a
document adds one small "fresh" block per term; merging (merging.py) folds fresh blocks into full ones in the
background, the layout a bulk load writes. IndexedDocument remembers each document's terms and chunks, so
removing it rewrites only the blocks that hold its chunks.
Document frequencies live in TermStat (one row per KB and term) and corpus totals in IndexStats.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils.translation import gettext_lazy as _

from accounts.models import TenantModel
from knowledge.models import Document, KnowledgeBase
from knowledge.search.analysis import MAX_TOKEN_LENGTH

MAX_TERM_LENGTH = MAX_TOKEN_LENGTH


class IndexStats(TenantModel):
    """Corpus totals of one KB's BM25 index. `version` changes with every indexed or removed document."""

    kb = models.OneToOneField(KnowledgeBase, on_delete=models.CASCADE, related_name="search_stats")
    chunk_count = models.BigIntegerField(default=0)
    total_length = models.BigIntegerField(default=0)
    analyzer = models.CharField(max_length=40, blank=True)
    version = models.BigIntegerField(default=0)
    # Mean idf over the KB's whole vocabulary (rank-bm25's floor for terms in more than half the chunks),
    # computed on demand and kept while `version` stays the same.
    average_idf = models.FloatField(null=True, blank=True)
    average_idf_version = models.BigIntegerField(default=-1)
    # Documents indexed one by one since the KB's blocks were last merged (merging.py), and when the last was.
    fresh_documents = models.IntegerField(default=0)
    indexed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"index of KB {self.kb_id}: {self.chunk_count} chunks"


class TermStat(TenantModel):
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+", db_index=False)
    term = models.CharField(max_length=MAX_TERM_LENGTH, db_collation="C")
    df = models.IntegerField(default=0)
    # Bounds for top-k pruning: the largest tf and the shortest chunk among the term's postings. Indexing
    # widens them; removing a document leaves them as they are (still bounds, maybe loose) until a rebuild.
    max_tf = models.IntegerField(null=True, blank=True)
    min_length = models.IntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kb", "term"], name="uniq_search_term_per_kb")]

    def __str__(self) -> str:
        return f"{self.term} ({self.df})"


class PostingBlock(TenantModel):
    """Up to postings.BLOCK_SIZE postings of one term in one KB, in chunk-id order, packed into `data`."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+", db_index=False)
    term = models.CharField(max_length=MAX_TERM_LENGTH, db_collation="C")
    first_chunk = models.BigIntegerField()
    last_chunk = models.BigIntegerField()
    size = models.IntegerField()
    # The block's largest tf and shortest chunk: bounds on what any of its postings can score.
    max_tf = models.IntegerField()
    min_length = models.IntegerField()
    # Written by indexing one document and not merged yet (merging.py).
    fresh = models.BooleanField(default=False)
    data = models.BinaryField()

    class Meta:
        indexes = [
            # A term's blocks in chunk order, and the blocks of a term that may hold a given chunk.
            models.Index(fields=["kb", "term", "first_chunk"], name="search_block_kb_term_first"),
            models.Index(fields=["kb"], condition=models.Q(fresh=True), name="search_block_fresh"),
        ]

    def __str__(self) -> str:
        return f"{self.term}: {self.size} postings from chunk {self.first_chunk}"


class IndexedDocument(TenantModel):
    """What one document added to its KB's totals, so removing it can subtract exactly that."""

    document = models.OneToOneField(Document, on_delete=models.CASCADE, related_name="search_index")
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    chunk_count = models.IntegerField(default=0)
    total_length = models.BigIntegerField(default=0)
    document_version = models.PositiveIntegerField(default=0)
    indexed_at = models.DateTimeField(auto_now=True)
    # Its distinct terms and its chunks: which blocks removing it must rewrite.
    terms = ArrayField(models.CharField(max_length=MAX_TERM_LENGTH), default=list)
    chunk_ids = ArrayField(models.BigIntegerField(), default=list)

    def __str__(self) -> str:
        return f"document {self.document_id} indexed ({self.chunk_count} chunks)"


class EvalQuestion(TenantModel):
    """A test question of a KB with the documents a good search must find."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="eval_questions")
    text = models.TextField(_("question"))
    expected_documents = models.ManyToManyField(Document, related_name="+", verbose_name=_("expected documents"))
    # References from an upload that matched no document (yet): kept so the admin can see and fix them.
    unresolved_refs = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.text[:80]


class EvalRun(TenantModel):
    """One evaluation of a KB's test questions. Started queued (settings and questions fixed at that moment),
    run by a worker (knowledge.search.tasks.run_evaluation), then done with metrics or failed with a reason."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="eval_runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    k = models.PositiveSmallIntegerField(default=10)
    question_count = models.PositiveIntegerField(default=0)  # questions to score, known when the run starts
    progress = models.PositiveIntegerField(default=0)  # questions scored so far
    question_ids = models.JSONField(default=list, blank=True)  # the questions fixed when the run started
    recall_at_k = models.FloatField(null=True)
    ndcg_at_10 = models.FloatField(null=True)
    mrr = models.FloatField(null=True)
    settings = models.JSONField(default=dict)  # the retrieval settings the run used (snapshot at start)
    per_question = models.JSONField(default=list)  # [{"question_id", "ndcg", "recall", "rr", "found": [...]}]
    error = models.TextField(blank=True)
    claim_token = models.CharField(max_length=32, blank=True)  # the worker run that owns it while running
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"run {self.pk} of KB {self.kb_id}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        if not self.question_count:
            return 0
        return min(100, int(self.progress * 100 / self.question_count))
