"""Chat worker tasks (queue "chat"): thin wrappers that set the tenant scope and run the answer pipeline."""

from __future__ import annotations

import redis
from celery import shared_task
from django.db import OperationalError

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from chat import pipeline


@shared_task(queue="chat", acks_late=True, autoretry_for=(OperationalError, redis.ConnectionError),
             retry_backoff=True, retry_backoff_max=30, max_retries=3)
def generate_answer(*, message_id: int, tenant_id: int) -> None:
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:  # the tenant was deleted with its messages
        return
    with tenant_scope(tenant):
        pipeline.generate(tenant=tenant, message_id=message_id)
