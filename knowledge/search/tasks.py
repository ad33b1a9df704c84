"""Retrieval worker tasks (default queue): thin wrappers that set the tenant scope and call one service."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from knowledge.search import evaluation

TIME_LIMIT_S = settings.EVAL_TIME_LIMIT_S


@shared_task(name="knowledge.search.run_evaluation", acks_late=True, ignore_result=True,
             autoretry_for=evaluation.TRANSIENT_ERRORS, retry_backoff=True, retry_backoff_max=60,
             max_retries=evaluation.EVAL_MAX_ATTEMPTS - 1, soft_time_limit=TIME_LIMIT_S,
             time_limit=TIME_LIMIT_S + 120)
def run_evaluation(*, run_id: int, tenant_id: int) -> str:
    """Score an evaluation run's questions. Idempotent: only a queued run is claimed (see eval_run_execute);
    transient database/Redis errors put it back in the queue and retry with backoff."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:  # the tenant was deleted with its runs
        return "gone"
    with tenant_scope(tenant):
        return evaluation.eval_run_execute(tenant=tenant, run_id=run_id)
