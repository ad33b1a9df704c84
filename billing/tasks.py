from datetime import date

from celery import shared_task

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from billing.services import quota_notice_send, reservations_expire


@shared_task(name="billing.quota_notice", autoretry_for=(ConnectionError, TimeoutError), retry_backoff=True,
             max_retries=5)
def quota_notice_task(tenant_id: int, threshold: int, period: str) -> int:
    """Email a team's admins that usage crossed 80% / 100% of the plan (claimed once per period and level)."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return 0
    with tenant_scope(tenant):
        return quota_notice_send(tenant=tenant, threshold=threshold, period=date.fromisoformat(period))


@shared_task(name="billing.reservations_expire")
def reservations_expire_task() -> int:
    """Celery beat: give back allowance held by calls whose process died before settling."""
    return reservations_expire()
