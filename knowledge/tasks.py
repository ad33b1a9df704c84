"""Celery tasks: thin wrappers around knowledge.pipeline and knowledge.vectors (ids in, tenant scope set there)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from knowledge import pipeline, vectors

SOFT_TIME_LIMIT = 30 * 60


@shared_task(name="knowledge.process_document", ignore_result=True, soft_time_limit=SOFT_TIME_LIMIT,
             time_limit=SOFT_TIME_LIMIT + 120)
def process_document(document_id: int, version: int | None = None) -> str:
    try:
        return pipeline.run_document(document_id=document_id, version=version, may_yield=True)
    finally:
        pipeline.request_dispatch()  # refill the window: the next document, fairly chosen


@shared_task(name="knowledge.upgrade_vectors", queue=vectors.QUEUE, ignore_result=True, acks_late=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=True, retry_backoff_max=60, max_retries=5,
             soft_time_limit=SOFT_TIME_LIMIT, time_limit=SOFT_TIME_LIMIT + 120)
def upgrade_vectors(upgrade_id: int) -> str:
    """Idempotent: only a waiting upgrade is taken, and a run embeds only chunks still lacking a new vector."""
    try:
        return vectors.run_upgrade(upgrade_id=upgrade_id)
    finally:
        vectors.request_dispatch()  # the next waiting upgrade, or this one's next slice
