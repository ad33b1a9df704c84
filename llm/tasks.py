from celery import shared_task

from llm import services


@shared_task(name="llm.tasks.llm_health_check", ignore_result=True, soft_time_limit=30, time_limit=40)
def llm_health_check() -> int:
    """Active health check of every platform model server (Celery beat, every LLM_HEALTH_INTERVAL_S)."""
    return sum(1 for line in services.health_check_all() if line["error"])
