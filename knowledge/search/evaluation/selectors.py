"""Reads of the evaluation feature: a KB's test questions and its runs."""

from __future__ import annotations

from accounts.selectors import tenant_object_or_404, tenant_objects
from knowledge.models import KnowledgeBase
from knowledge.search.models import EvalQuestion, EvalRun


def eval_question_list(*, tenant, kb: KnowledgeBase):
    return tenant_objects(EvalQuestion, tenant=tenant).filter(kb=kb).prefetch_related("expected_documents")


def eval_question_get(*, tenant, question_id) -> EvalQuestion:
    return tenant_object_or_404(EvalQuestion, tenant=tenant, pk=question_id)


def eval_run_list(*, tenant, kb: KnowledgeBase):
    return tenant_objects(EvalRun, tenant=tenant).filter(kb=kb).order_by("-created_at", "-id")


def eval_run_get(*, tenant, run_id) -> EvalRun:
    return tenant_object_or_404(EvalRun, tenant=tenant, pk=run_id)

