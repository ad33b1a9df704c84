"""Retrieval's own tables: the BM25 inverted index (postings, term statistics, per-KB statistics) and the
evaluation feature (test questions, runs).

The inverted index is laid out for one query pattern: "the postings of these few terms in these KBs".
A PostingBlock row holds, for one (document, term), the ids of the document's chunks that contain the term
with the term's frequency and each chunk's length, as parallel arrays. A query reads one index range per
(KB, term) and never the rest of the KB; re-indexing or deleting a document touches only its own rows.
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

    def __str__(self) -> str:
        return f"index of KB {self.kb_id}: {self.chunk_count} chunks"


class TermStat(TenantModel):
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+", db_index=False)
    term = models.CharField(max_length=MAX_TERM_LENGTH, db_collation="C")
    df = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kb", "term"], name="uniq_search_term_per_kb")]

    def __str__(self) -> str:
        return f"{self.term} ({self.df})"


class PostingBlock(TenantModel):
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+", db_index=False)
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="+")
    term = models.CharField(max_length=MAX_TERM_LENGTH, db_collation="C")
    chunk_ids = ArrayField(models.BigIntegerField())
    tfs = ArrayField(models.IntegerField())
    lengths = ArrayField(models.IntegerField())

    class Meta:
        indexes = [models.Index(fields=["kb", "term"], name="search_posting_kb_term")]

    def __str__(self) -> str:
        return f"{self.term} in document {self.document_id}"


class IndexedDocument(TenantModel):
    """What one document added to its KB's totals, so removing it can subtract exactly that."""

    document = models.OneToOneField(Document, on_delete=models.CASCADE, related_name="search_index")
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    chunk_count = models.IntegerField(default=0)
    total_length = models.BigIntegerField(default=0)
    document_version = models.PositiveIntegerField(default=0)
    indexed_at = models.DateTimeField(auto_now=True)

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
    class Status(models.TextChoices):
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="eval_runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DONE)
    k = models.PositiveSmallIntegerField(default=10)
    question_count = models.PositiveIntegerField(default=0)
    recall_at_k = models.FloatField(null=True)
    ndcg_at_10 = models.FloatField(null=True)
    mrr = models.FloatField(null=True)
    settings = models.JSONField(default=dict)  # the retrieval settings the run used
    per_question = models.JSONField(default=list)  # [{"question_id", "ndcg", "recall", "rr", "found": [...]}]
    error = models.TextField(blank=True)
    created_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    duration_ms = models.FloatField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"run {self.pk} of KB {self.kb_id}"
