"""Retrieval worker tasks: thin wrappers that set the tenant scope and call one service. Evaluation runs go to
the default queue, posting merges to the ingest queue (merging.request_merge), the merge sweep to maintenance."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from knowledge.search import merging
from knowledge.search.evaluation import runs

TIME_LIMIT_S = settings.EVAL_TIME_LIMIT_S


@shared_task(name="knowledge.search.run_evaluation", acks_late=True, ignore_result=True,
             autoretry_for=runs.TRANSIENT_ERRORS, retry_backoff=True, retry_backoff_max=60,
             max_retries=runs.EVAL_MAX_ATTEMPTS - 1, soft_time_limit=TIME_LIMIT_S,
             time_limit=TIME_LIMIT_S + 120)
def run_evaluation(*, run_id: int, tenant_id: int) -> str:
    """Score an evaluation run's questions. Idempotent: only a queued run is claimed (see eval_run_execute);
    transient database/Redis errors put it back in the queue and retry with backoff."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:  # the tenant was deleted with its runs
        return "gone"
    with tenant_scope(tenant):
        return runs.eval_run_execute(tenant=tenant, run_id=run_id)


@shared_task(name="knowledge.search.merge_postings", acks_late=True, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=True, retry_backoff_max=60,
             max_retries=4)
def merge_postings(*, kb_id: int, tenant_id: int) -> int:
    """Merge a KB's fresh posting blocks. Idempotent: a repeated or late message finds nothing fresh."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return 0
    with tenant_scope(tenant):
        return merging.postings_merge_kb(tenant=tenant, kb_id=kb_id)


@shared_task(name="knowledge.search.merge_sweep", ignore_result=True)
def merge_sweep() -> int:
    """Queue merges for KBs whose fresh blocks wait since their last indexing (beat)."""
    return merging.merge_sweep()
