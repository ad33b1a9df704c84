"""Writes of the evaluation feature: a KB's test questions, and starting a run (a worker scores it: runs)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.errors import AppError
from accounts.tenancy import system_scope, tenant_scope
from config import jobs
from knowledge.models import Document, KnowledgeBase
from knowledge.search.config import SettingsError, clean_settings, settings_for
from knowledge.search.evaluation.files import UploadError, parse_questions
from knowledge.search.evaluation.runs import EVAL_RUN_JOB, eval_run_execute
from knowledge.search.models import EvalQuestion, EvalRun
from knowledge.search.tasks import run_evaluation

log = logging.getLogger(__name__)

MAX_QUESTIONS_PER_RUN = 1000

MSG_NO_JUDGED = gettext_noop("No test question has an expected document yet.")
MSG_QUEUE_DOWN = gettext_noop("The evaluation could not be handed to a worker; start it again.")


# ---------------------------------------------------------------- test questions

def resolve_refs(*, tenant, kb: KnowledgeBase, refs: list[str]) -> tuple[list[int], list[str]]:
    """Document ids for references given as document id, file name or title (case-insensitive)."""
    docs = list(Document.objects.filter(tenant=tenant, kb=kb).values_list("pk", "filename", "title"))
    by_id = {str(pk): pk for pk, _f, _t in docs}
    by_name = {}
    for pk, filename, title in docs:
        by_name.setdefault((filename or "").lower(), pk)
        by_name.setdefault((title or "").lower(), pk)
    found, missing = [], []
    for ref in refs:
        pk = by_id.get(ref) or by_name.get(ref.lower())
        if pk is None:
            missing.append(ref)
        elif pk not in found:
            found.append(pk)
    return found, missing


def eval_question_create(*, tenant, kb: KnowledgeBase, text: str, document_ids: list[int] | None = None,
                         refs: list[str] | None = None) -> EvalQuestion:
    text = (text or "").strip()
    if not text:
        raise UploadError(_("Enter a question."), field="text")
    with tenant_scope(tenant), transaction.atomic():
        ids = [int(i) for i in document_ids or []]
        valid = set(Document.objects.filter(tenant=tenant, kb=kb, pk__in=ids).values_list("pk", flat=True))
        if set(ids) - valid:
            raise UploadError(_("Expected documents must belong to this knowledge base."),
                              field="expected_document_ids")
        missing: list[str] = []
        if refs:
            found, missing = resolve_refs(tenant=tenant, kb=kb, refs=refs)
            valid.update(found)
        question = EvalQuestion.objects.create(tenant=tenant, kb=kb, text=text[:4000], unresolved_refs=missing)
        question.expected_documents.set(sorted(valid))
    return question


def eval_questions_import(*, tenant, kb: KnowledgeBase, data: bytes, filename: str = "") -> dict:
    parsed = parse_questions(data, filename)
    created = unresolved = 0
    with tenant_scope(tenant), transaction.atomic():
        for item in parsed:
            question = eval_question_create(tenant=tenant, kb=kb, text=item.text, refs=item.refs)
            created += 1
            unresolved += bool(question.unresolved_refs)
    return {"created": created, "with_unresolved": unresolved}


def eval_question_delete(*, tenant, question: EvalQuestion) -> None:
    with tenant_scope(tenant):
        question.delete()


# ---------------------------------------------------------------- starting a run

class EvalRunError(AppError):
    """A run cannot start; `fields` maps a parameter to its message."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message, fields=fields)


class EvalRunBusy(EvalRunError):
    """The KB already has a queued or running evaluation."""

    code, status = "conflict", 409

    def __init__(self, message: str, run: EvalRun):
        super().__init__(message)
        self.run = run


def eval_run_start(*, tenant, kb: KnowledgeBase, user=None, k: int = 10, options: dict | None = None,
                   enqueue: bool = True) -> EvalRun:
    """A queued run of the KB's judged test questions with the KB's settings as they are now (plus `options`),
    handed to a worker after commit. Raises EvalRunError (nothing to evaluate, bad options) or EvalRunBusy."""
    try:
        k = int(k)
    except (TypeError, ValueError) as exc:
        raise EvalRunError(_("k must be a whole number."), {"k": _("Enter a whole number.")}) from exc
    if not 1 <= k <= 50:
        raise EvalRunError(_("k must be between 1 and 50."), {"k": _("Must be between %(lo)s and %(hi)s.")
                                                                % {"lo": 1, "hi": 50}})
    try:
        overrides = clean_settings(options or {})
    except SettingsError as exc:
        raise EvalRunError(str(exc), {"options": exc.fields}) from exc
    with tenant_scope(tenant), transaction.atomic():
        # One start at a time per KB: the KB row is the lock.
        kb = KnowledgeBase.objects.select_for_update().get(tenant=tenant, pk=kb.pk)
        runs = EvalRun.objects.filter(tenant=tenant, kb=kb)
        jobs.sweep_kind(EVAL_RUN_JOB, within=runs)  # a dead run ends now, not at the next beat sweep
        active = runs.filter(status__in=EvalRun.ACTIVE).order_by("-created_at", "-id").first()
        if active is not None:
            raise EvalRunBusy(_("An evaluation of this knowledge base is already in progress (run #%(id)s).")
                              % {"id": active.pk}, active)
        question_ids = list(
            EvalQuestion.objects.filter(tenant=tenant, kb=kb, expected_documents__isnull=False).distinct()
            .order_by("created_at", "id").values_list("pk", flat=True)[:MAX_QUESTIONS_PER_RUN]
        )
        if not question_ids:
            raise EvalRunError(_(MSG_NO_JUDGED))
        run = EvalRun.objects.create(
            tenant=tenant, kb=kb, k=k, status=EvalRun.Status.QUEUED, question_count=len(question_ids),
            question_ids=question_ids, settings=settings_for(kb, overrides).as_dict(),
            created_by=user if getattr(user, "pk", None) else None,
        )
        if enqueue:
            run_id, tenant_id = run.pk, tenant.pk
            transaction.on_commit(lambda: _send(run_id=run_id, tenant_id=tenant_id))
    return run


def _send(*, run_id: int, tenant_id: int) -> None:
    """After commit. A broker outage must not fail the request nor leave the run queued forever."""
    try:
        run_evaluation.delay(run_id=run_id, tenant_id=tenant_id)
    except Exception:
        log.warning("evaluation run %s could not be enqueued", run_id, exc_info=True)
        with system_scope():
            EvalRun.all_tenants.filter(pk=run_id, status=EvalRun.Status.QUEUED).update(
                status=EvalRun.Status.FAILED, error=MSG_QUEUE_DOWN, finished_at=timezone.now())


def eval_run_create(*, tenant, kb: KnowledgeBase, user=None, k: int = 10, options: dict | None = None) -> EvalRun:
    """The synchronous path (tests, commands): start a run and execute it in this process."""
    run = eval_run_start(tenant=tenant, kb=kb, user=user, k=k, options=options, enqueue=False)
    eval_run_execute(tenant=tenant, run_id=run.pk)
    with tenant_scope(tenant):
        run.refresh_from_db()
    return run
