"""Chat answers as jobs of the one engine (config.jobs): what happens to an answer whose worker went away.

A chat worker claims an answer (chat.pipeline.AnswerRun: its `run_id` is the claim token), and its process beats
for it while the answer runs. An answer whose worker died (no heartbeat for JOBS_STALE_AFTER_SECONDS) is failed
with a clear error, keeping the text it had streamed; an answer no worker took within CHAT_QUEUE_TIMEOUT_S fails
with `no_worker`. Both end the answer's stream with an `error` event, so a reader who comes later sees why.

The beat sweep does this for every answer, watched or not; a reader following an answer's stream (chat.sse)
asks for it for its own answer as soon as the answer is overdue, so a stream never waits for the next sweep.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.tenancy import tenant_scope
from chat import streams
from chat.models import Message
from chat.pipeline import Failure
from config import jobs

log = logging.getLogger(__name__)

MSG_INTERRUPTED = gettext_noop("The answer stopped unexpectedly (its worker went away). Please regenerate it.")
MSG_NO_WORKER = gettext_noop("No chat worker picked up this answer in time. Please try again later.")


def _fail_dead_answers(dead: QuerySet, now: datetime) -> dict:
    """The run loses its claim, so a worker that was only cut off writes nothing more."""
    failed = 0
    for answer_id, run_id in dead.values_list("pk", "run_id"):
        message = _(MSG_INTERRUPTED)
        if dead.filter(pk=answer_id, run_id=run_id).update(
                status=Message.Status.FAILED, error_code="interrupted", error=message, run_id="",
                content=streams.text_so_far(answer_id), finished_at=now):
            streams.client().delete(streams.run_key(answer_id))
            streams.publish(answer_id, "error", Failure("interrupted", message, 502).as_dict())
            failed += 1
    if failed:
        log.warning("chat: %s answers whose worker died failed", failed)
    return {"failed": failed}


def _fail_answers_not_taken(answers: QuerySet, now: datetime) -> dict:
    waiting = answers.filter(role=Message.Role.ASSISTANT, status=Message.Status.QUEUED,
                             created_at__lt=now - timedelta(seconds=settings.CHAT_QUEUE_TIMEOUT_S))
    not_taken = 0
    for answer_id in waiting.values_list("pk", flat=True):
        message = _(MSG_NO_WORKER)
        if waiting.filter(pk=answer_id).update(status=Message.Status.FAILED, error_code="no_worker", error=message,
                                               finished_at=now):
            streams.publish(answer_id, "error", Failure("no_worker", message, 503).as_dict())
            not_taken += 1
    if not_taken:
        log.warning("chat: %s answers no worker took failed", not_taken)
    return {"not_taken": not_taken}


ANSWER_JOB = jobs.Kind(name="answer", model=Message,
                       running=Q(role=Message.Role.ASSISTANT, status=Message.Status.RUNNING),
                       on_stale=_fail_dead_answers, on_waiting=_fail_answers_not_taken)


def answer_overdue(message: Message) -> bool:
    """The sweep would end this answer now: no worker took it in time, or its worker went silent."""
    if message.status == Message.Status.QUEUED:
        return message.created_at < timezone.now() - timedelta(seconds=settings.CHAT_QUEUE_TIMEOUT_S)
    return message.status == Message.Status.RUNNING and jobs.is_stale(message.heartbeat_at)


def answer_sweep(*, tenant, answer_id: int) -> dict:
    """The job sweep for one answer, e.g. the one a reader follows."""
    with tenant_scope(tenant):
        return jobs.sweep_kind(ANSWER_JOB, within=Message.objects.filter(pk=answer_id))
