"""Celery tasks: thin wrappers around knowledge.pipeline (ids in, tenant scope set by the pipeline)."""

from celery import shared_task

from knowledge import pipeline

SOFT_TIME_LIMIT = 30 * 60


@shared_task(name="knowledge.process_document", ignore_result=True, soft_time_limit=SOFT_TIME_LIMIT,
             time_limit=SOFT_TIME_LIMIT + 120)
def process_document(document_id: int, version: int | None = None) -> str:
    try:
        return pipeline.run_document(document_id=document_id, version=version, may_yield=True)
    finally:
        pipeline.request_dispatch()  # refill the window: the next document, fairly chosen
