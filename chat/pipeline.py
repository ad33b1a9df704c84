"""The answer pipeline, run by a chat worker for one assistant message.

claim -> condense the follow-up -> retrieve -> pack -> stream from the gateway into the Redis stream -> save.
Every exit path saves a final state (done / stopped / failed) and ends the stream with `done` or `error`, so
a reader never waits forever. A redelivered task takes the message over (new run id); the old run notices
and stops writing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from django.db.models import F
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from accounts.errors import AppError
from billing.errors import QuotaExceeded
from billing.services import usage_record
from billing.types import Stage, Usage, UsageContext
from chat import aio, defaults, extractive, prompting, retrieval, streams
from chat import llm as gateway
from chat.models import AnswerMode, Message
from chat.payloads import message_payload
from config import jobs
from knowledge.search.selectors import SearchError
from llm.types import (
    ChatRequest,
    ChatResult,
    ContextOverflow,
    GenerationParams,
    LLMError,
)

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.1
GENERATION_TIMEOUT_S = 600


@dataclass
class Failure:
    code: str
    message: str
    status: int
    retry_after: int | None = None
    details: dict = field(default_factory=dict)  # e.g. which quota limit, its value and reset time

    def as_dict(self) -> dict:
        data = {"code": self.code, "message": self.message, "status": self.status}
        if self.retry_after is not None:
            data["retry_after"] = self.retry_after
        if self.details:
            data["details"] = self.details
        return data


def failure_from(exc: BaseException) -> Failure:
    if isinstance(exc, AppError):  # quota, data policy, model errors: each class declares its code and status
        return Failure(exc.code, exc.message, exc.status, exc.retry_after, details=exc.details())
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Failure("timeout", "The model took too long to answer.", 504)
    return Failure("internal_error", "The answer failed because of an internal error.", 500)


@dataclass
class StreamOutcome:
    text: str = ""
    result: ChatResult | None = None
    status: str = Message.Status.DONE
    failure: Failure | None = None
    error: BaseException | None = None  # what failed, e.g. ContextOverflow (shrink and ask again)
    superseded: bool = False
    ttft_ms: float | None = None
    timings: dict = field(default_factory=dict)


def usage_context(message: Message, stage: str) -> UsageContext:
    conversation = message.conversation
    return UsageContext(
        stage=stage,
        idempotency_key=f"msg:{message.pk}:v{message.version}:{stage}",
        user_id=message.user_id,
        api_key_id=message.api_key_id,
        assistant_id=conversation.assistant_id,
        conversation_id=conversation.pk,
        message_id=message.pk,
    )


def history_for(message: Message) -> list[prompting.Turn]:
    """Earlier finished question/answer pairs of the conversation (the latest answer version of each)."""
    rows = list(
        Message.objects.filter(conversation_id=message.conversation_id, created_at__lt=message.created_at)
        .exclude(pk=message.parent_id).order_by("created_at", "id")
        .values("id", "role", "content", "parent_id", "status", "version")
    )
    answers: dict[int, str] = {}
    for row in rows:
        if row["role"] == Message.Role.ASSISTANT and row["status"] == Message.Status.DONE and row["parent_id"]:
            answers[row["parent_id"]] = row["content"]  # later versions overwrite earlier ones
    turns = [prompting.Turn(row["content"], answers[row["id"]])
             for row in rows if row["role"] == Message.Role.USER and row["id"] in answers]
    return turns[-defaults.HISTORY_TURNS:]


OVERRIDABLE = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty")


def generation_params(assistant, overrides: dict | None = None) -> GenerationParams:
    params = GenerationParams(
        temperature=assistant.temperature, top_p=assistant.top_p, top_k=assistant.top_k,
        max_tokens=assistant.max_tokens, presence_penalty=assistant.presence_penalty,
        frequency_penalty=assistant.frequency_penalty,
    )
    for name in OVERRIDABLE:
        if (overrides or {}).get(name) is not None:
            setattr(params, name, overrides[name])
    return params


def source_entry(n: int, hit) -> dict:
    """One chunk an answer was given, as citations and sources show it."""
    return {"n": n, "chunk_id": hit.chunk_id, "document_id": hit.document_id, "kb_id": hit.kb_id,
            "title": hit.document_title, "page": hit.page, "heading": hit.heading_path,
            "snippet": prompting.snippet(hit.text)}


def build_sources(context_hits: list) -> list[dict]:
    return [source_entry(n, hit) for n, hit in enumerate(context_hits, start=1)]


def build_citations(text: str, context_hits: list) -> list[dict]:
    """Citations for the [n] the answer uses; numbers outside the context are not cited (never invented)."""
    return [source_entry(n, context_hits[n - 1]) for n in prompting.cited_numbers(text)
            if 1 <= n <= len(context_hits)]


def answers_extractively(assistant, target: str, *, tenant) -> bool:
    """Quote the documents instead of calling a model: the assistant says so, or it may fall back and no
    answer model is configured at all."""
    mode = assistant.answer_mode
    return mode == AnswerMode.EXTRACTIVE or (
        mode == AnswerMode.GENERATIVE_FALLBACK and not gateway.target_configured(target, tenant=tenant))


def cut_warnings(prompt: prompting.BuiltPrompt) -> list[str]:
    """Tell the user when the model's context window could not hold everything found."""
    notes = []
    if prompt.dropped_hits:
        notes.append(f"The model's context window ({prompt.context_window} tokens) could not hold every source: "
                     f"{prompt.dropped_hits} lower-ranked source(s) were left out.")
    if prompt.dropped_examples:
        notes.append(f"{prompt.dropped_examples} example(s) of the assistant were left out to fit the context window.")
    return notes


# Failures after which a "generative, extractive when unavailable" assistant quotes the documents instead.
FALLBACK_CODES = {"model_unavailable", "upstream_error", "timeout"}


class AnswerRun:
    def __init__(self, *, tenant, message_id: int):
        self.tenant = tenant
        self.message_id = message_id
        self.run_id = ""  # the claim token (config.jobs), once claimed
        self.job: jobs.Job | None = None
        self.message: Message | None = None

    # -------------------------------------------------------------- claim and bookkeeping

    def claim(self) -> bool:
        """Take the answer, or take it over from an earlier run (a redelivered task: the old run stops)."""
        token = jobs.claim(Message.objects.filter(
            pk=self.message_id, role=Message.Role.ASSISTANT, status__in=[Message.Status.QUEUED, Message.Status.RUNNING]
        ), token_field="run_id", status=Message.Status.RUNNING, attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), Now()))
        if token is None:
            return False
        self.run_id, self.job = token, jobs.Job(Message, self.message_id, token, token_field="run_id")
        self.message = Message.objects.select_related("conversation__assistant", "parent").get(pk=self.message_id)
        return True

    @property
    def _run_key(self) -> str:
        return streams.run_key(self.message_id)

    def _save(self, **fields) -> bool:
        """Write only while this run still owns the message (a redelivered task or the job sweep may have taken
        it)."""
        return self.job.update(**fields)

    def _finish(self, *, status: str, text: str, failure: Failure | None = None, **fields) -> None:
        message = self.message
        saved = self._save(status=status, content=text, finished_at=timezone.now(),
                           error_code=failure.code if failure else "", error=failure.message if failure else "",
                           **fields)
        if not saved:
            return
        message.refresh_from_db()
        if failure is not None and status == Message.Status.FAILED:
            streams.publish(message.pk, "error", failure.as_dict())
        else:
            streams.publish(message.pk, "done", {"status": status, "message": message_payload(message)})

    # -------------------------------------------------------------- the pipeline

    def run(self) -> None:
        if not self.claim():
            return
        with jobs.heartbeat(self.job):
            try:
                self._answer()
            except Exception as exc:  # noqa: BLE001 - a bug must leave a failed answer, never one "answering" forever
                log.exception("chat answer failed for message %s", self.message_id)
                self._finish(status=Message.Status.FAILED, text="", failure=failure_from(exc))

    def _answer(self) -> None:
        message = self.message
        conversation = message.conversation
        assistant = conversation.assistant
        started = time.monotonic()
        # One Redis round trip: take the run over, tell readers it started (and to drop a dead run's text).
        cancelled = streams.start_run(message.pk, run_id=self.run_id, restarted=message.attempts > 1, meta={
            "message_id": message.pk, "conversation_id": conversation.pk, "version": message.version,
            "status": "running"})
        if assistant is None:
            self._finish(status=Message.Status.FAILED, text="",
                         failure=Failure("assistant_deleted", "This conversation's assistant was deleted.", 404))
            return
        if cancelled:
            self._finish(status=Message.Status.STOPPED, text="")
            return
        timings: dict[str, float] = {}
        warnings: list[str] = []
        question = message.parent.content if message.parent else ""
        history = history_for(message)  # the "searching" step was published when the answer was queued
        try:
            standalone = self._condense(assistant, question, history, timings, warnings)
            t0 = time.monotonic()
            result = retrieval.retrieve(tenant=self.tenant, assistant=assistant, query=standalone,
                                        usage=usage_context(message, Stage.SEARCH))
            timings["retrieval_ms"] = round((time.monotonic() - t0) * 1000, 2)
            warnings += result.warnings
        except QuotaExceeded as exc:
            self._finish(status=Message.Status.FAILED, text="", failure=failure_from(exc), timings=timings)
            return
        except SearchError as exc:
            failure = Failure("retrieval_error", exc.message, 400)
            self._finish(status=Message.Status.FAILED, text="", failure=failure, timings=timings)
            return
        except Exception as exc:
            log.exception("chat retrieval failed for message %s", message.pk)
            self._finish(status=Message.Status.FAILED, text="", failure=failure_from(exc), timings=timings)
            return
        if not result.hits:
            self._answer_without_context(question=question, standalone=standalone, warnings=warnings,
                                         timings=timings, started=started)
            return
        target = assistant.answer_target or gateway.default_answer_target()
        if answers_extractively(assistant, target, tenant=self.tenant):
            self._answer_extractively(question=question, standalone=standalone, hits=result.hits,
                                      warnings=warnings, timings=timings, started=started)
            return
        window = gateway.context_window(tenant=self.tenant, target=target)
        prompt = prompting.build_answer_prompt(assistant=assistant, history=history, question=question,
                                               hits=result.hits, context_window=window)
        if not prompt.context_hits:  # a window too small for even one document: no grounded answer possible
            self._answer_without_context(question=question, standalone=standalone,
                                         warnings=warnings + cut_warnings(prompt), timings=timings, started=started)
            return
        context_ids = [hit.chunk_id for hit in prompt.context_hits]
        streams.publish(message.pk, "step", {"step": "sources", "count": len(prompt.context_hits)})
        self._save(standalone_question=standalone, warnings=warnings + cut_warnings(prompt),
                   context_chunk_ids=context_ids, target=target, sources=build_sources(prompt.context_hits))
        streams.publish(message.pk, "step", {"step": "writing", "mode": "generative"})
        timings["generation_started_at"] = time.time()
        outcome = self._generate(assistant=assistant, target=target, prompt=prompt)
        if outcome.superseded:
            return
        if isinstance(outcome.error, ContextOverflow) and not outcome.text:
            # The model's tokenizer counted more than our budget did: shrink once to what it said, ask again.
            prompt = prompting.build_answer_prompt(
                assistant=assistant, history=history, question=question, hits=result.hits,
                context_window=prompting.overflow_retry_window(built=prompt, error=outcome.error))
            warnings.append("The documents did not fit the model's context window; fewer were sent.")
            self._save(warnings=warnings + cut_warnings(prompt), sources=build_sources(prompt.context_hits),
                       context_chunk_ids=[hit.chunk_id for hit in prompt.context_hits])
            outcome = self._generate(assistant=assistant, target=target, prompt=prompt)
        if outcome.superseded:
            return
        if (outcome.status == Message.Status.FAILED and not outcome.text and outcome.failure
                and outcome.failure.code in FALLBACK_CODES and assistant.answer_mode == AnswerMode.GENERATIVE_FALLBACK):
            warnings.append(f"The answer model was unavailable ({outcome.failure.message}); "
                            "answered by quoting the documents instead.")
            timings.update(outcome.timings)
            self._answer_extractively(question=question, standalone=standalone, hits=result.hits,
                                      warnings=warnings, timings=timings, started=started)
            return
        warnings += cut_warnings(prompt)
        timings.update(outcome.timings)
        timings["total_ms"] = round((time.monotonic() - started) * 1000, 2)
        usage_fields = {}
        if outcome.result is not None:
            res = outcome.result
            usage_fields = dict(
                provider=res.provider, model=res.model, input_tokens=res.usage.input_tokens,
                cached_input_tokens=res.usage.cached_input_tokens, output_tokens=res.usage.output_tokens,
                usage_estimated=res.usage.estimated, ignored_params=list(res.ignored_params),
                finish_reason=(res.finish_reason or "")[:20],
            )
        self._finish(status=outcome.status, text=outcome.text, failure=outcome.failure, timings=timings,
                     warnings=warnings, citations=build_citations(outcome.text, prompt.context_hits),
                     answered_by="generative" if outcome.text else "", **usage_fields)

    def _generate(self, *, assistant, target: str, prompt: prompting.BuiltPrompt) -> StreamOutcome:
        overrides = self.message.overrides or {}
        params = generation_params(assistant, overrides)
        if prompt.max_tokens:  # never ask for more output than the window has room for
            params.max_tokens = min(params.max_tokens or prompt.max_tokens, prompt.max_tokens)
        request = ChatRequest(messages=prompt.messages, params=params,
                              json_schema=overrides.get("json_schema") or assistant.json_schema or None)
        shared_loop = aio.uses_shared_loop()
        return aio.run(lambda: self._stream(target=target, request=request, keep_clients=shared_loop))

    def _answer_extractively(self, *, question: str, standalone: str, hits: list, warnings: list, timings: dict,
                             started: float) -> None:
        """Quote the passages that answer the question; no model call, a zero-cost ledger entry."""
        message = self.message
        given = hits[:extractive.HITS_CONSIDERED]
        streams.publish(message.pk, "step", {"step": "sources", "count": len(given)})
        streams.publish(message.pk, "step", {"step": "writing", "mode": "extractive"})
        t0 = time.monotonic()
        answer = extractive.extractive_answer(
            question=standalone or question, hits=given,
            similarity=retrieval.sentence_similarity(tenant=self.tenant, hits=given))
        timings["answer_ms"] = round((time.monotonic() - t0) * 1000, 2)
        blocks = answer.text.split("\n\n")
        for i, block in enumerate(blocks):  # one event per block, as a streamed answer arrives
            streams.publish(message.pk, "token", {"text": block if i == len(blocks) - 1 else block + "\n\n"})
        record_extractive_usage(tenant=self.tenant, message=message, latency_ms=timings["answer_ms"])
        timings["total_ms"] = round((time.monotonic() - started) * 1000, 2)
        self._finish(status=Message.Status.DONE, text=answer.text, timings=timings, answered_by="extractive",
                     standalone_question=standalone, warnings=warnings, sources=build_sources(given),
                     context_chunk_ids=[hit.chunk_id for hit in given], citations=build_citations(answer.text, given),
                     target="", provider="", model="", input_tokens=0, cached_input_tokens=0, output_tokens=0,
                     usage_estimated=False, finish_reason="stop")

    def _answer_without_context(self, *, question: str, standalone: str, warnings: list, timings: dict,
                                started: float) -> None:
        """Nothing relevant was found (or fits): say so in the user's language, without a model call."""
        streams.publish(self.message_id, "step", {"step": "sources", "count": 0})
        text = defaults.NO_CONTEXT_ANSWER[defaults.language_of(question)]
        streams.publish(self.message_id, "token", {"text": text})
        timings["total_ms"] = round((time.monotonic() - started) * 1000, 2)
        self._finish(status=Message.Status.DONE, text=text, timings=timings, citations=[], sources=[],
                     context_chunk_ids=[], standalone_question=standalone, warnings=warnings)

    def _condense(self, assistant, question: str, history: list, timings: dict, warnings: list) -> str:
        if not history or assistant.answer_mode == AnswerMode.EXTRACTIVE:  # extractive: no model calls at all
            return question
        t0 = time.monotonic()
        target = assistant.cheap_target or gateway.default_cheap_target() or assistant.answer_target \
            or gateway.default_answer_target()
        request = ChatRequest(
            messages=prompting.build_condense_messages(history=history, question=question),
            params=GenerationParams(temperature=0.0, max_tokens=128),
        )
        try:
            result = gateway.complete(tenant=self.tenant, target=target, request=request,
                                      usage=usage_context(self.message, Stage.CONDENSE))
            standalone = prompting.clean_condensed(result.text, question)
        except QuotaExceeded:
            raise
        except LLMError as exc:
            warnings.append(f"Could not rewrite the follow-up question ({exc.message}); searched with it as asked.")
            standalone = question
        timings["condense_ms"] = round((time.monotonic() - t0) * 1000, 2)
        return standalone

    async def _stream(self, *, target: str, request: ChatRequest, keep_clients: bool) -> StreamOutcome:
        outcome = StreamOutcome()
        parts: list[str] = []
        stream = streams.AsyncStream(self.message_id)
        t0 = time.monotonic()

        async def consume():
            agen = gateway.answer_stream(tenant=self.tenant, target=target, request=request,
                                         usage=usage_context(self.message, Stage.ANSWER))
            try:
                async for item in agen:
                    if isinstance(item, ChatResult):
                        outcome.result = item
                    elif item:
                        if outcome.ttft_ms is None:
                            outcome.ttft_ms = round((time.monotonic() - t0) * 1000, 2)
                            outcome.timings["first_token_at"] = time.time()
                        parts.append(item)
                        await stream.publish("token", {"text": item})
            finally:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()

        task = asyncio.create_task(consume())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=CANCEL_POLL_S)
                if task.done():
                    break
                cancelled, owner = await asyncio.gather(stream.cancel_requested(), stream.redis.get(self._run_key))
                if owner is not None and owner.decode() != self.run_id:
                    outcome.superseded = True
                elif cancelled:
                    outcome.status = Message.Status.STOPPED
                elif time.monotonic() - t0 > GENERATION_TIMEOUT_S:
                    outcome.status = Message.Status.FAILED
                    outcome.failure = failure_from(TimeoutError())
                else:
                    continue
                task.cancel()
                break
            try:
                await task
            except asyncio.CancelledError:
                if outcome.status == Message.Status.DONE and not outcome.superseded:
                    raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a saved, visible state
                if not isinstance(exc, AppError):
                    log.exception("chat generation failed for message %s", self.message_id)
                outcome.status = Message.Status.FAILED
                outcome.failure = failure_from(exc)
                outcome.error = exc
            await stream.touch()
        finally:
            await stream.close()
            if not keep_clients:  # a throwaway loop: close the gateway's clients before it ends
                await gateway.close_loop_resources()
        outcome.text = "".join(parts)
        outcome.timings["ttft_ms"] = outcome.ttft_ms
        outcome.timings["generation_ms"] = round((time.monotonic() - t0) * 1000, 2)
        return outcome


def generate(*, tenant, message_id: int) -> None:
    AnswerRun(tenant=tenant, message_id=message_id).run()


def record_extractive_usage(*, tenant, message: Message, latency_ms: float) -> None:
    """A zero-cost ledger line, so usage pages count every answer, quoted ones included."""
    usage_record(tenant=tenant, context=usage_context(message, Stage.EXTRACTIVE), provider="ragdesk",
                 model="extractive", usage=Usage(), latency_ms=latency_ms)
