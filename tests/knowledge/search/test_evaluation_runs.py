"""Evaluation runs through a worker: start (queued, settings fixed), claim (once), progress, done/failed, the task,
and the pages that show a run's progress while it is queued or running."""

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from accounts.tenancy import tenant_scope
from knowledge.models import KnowledgeBase
from knowledge.search.evaluation import runs, scoring
from knowledge.search.evaluation.runs import eval_run_execute
from knowledge.search.evaluation.services import (
    EvalRunBusy,
    EvalRunError,
    eval_question_create,
    eval_run_create,
    eval_run_start,
)
from knowledge.search.models import EvalRun
from tests.conftest import web_client
from tests.factories.search import make_indexed_document, make_search_kb

TOPICS = [
    ("Refunds", "Refunds are possible within 30 days of purchase.", "refund within 30 days"),
    ("Shipping", "Orders ship within two business days.", "how fast do orders ship"),
    ("Security", "Passwords rotate every 90 days.", "password rotation policy"),
    ("Holidays", "The office is closed on public holidays.", "office closed holidays"),
    ("Warranty", "Every device has a two year warranty.", "device warranty years"),
    ("Invoices", "Invoices are sent by email each month.", "monthly invoice email"),
]


@pytest.fixture
def kb_a(tenant_a):
    tenant = tenant_a.tenant
    kb = make_search_kb(tenant, name="Handbook", retrieval={"mode": "bm25"})
    for title, text, question in TOPICS:
        doc = make_indexed_document(tenant, kb, [text], title=title)
        eval_question_create(tenant=tenant, kb=kb, text=question, document_ids=[doc.pk])
    return kb


@pytest.fixture
def sent(monkeypatch):
    """Messages the services hand to Celery (nothing is sent to a broker)."""
    from knowledge.search.tasks import run_evaluation

    messages = []
    monkeypatch.setattr(run_evaluation, "delay", lambda **kwargs: messages.append(kwargs))
    return messages


@pytest.fixture
def searches(monkeypatch):
    """Record every search an evaluation makes (the real ranking still runs)."""
    calls = []
    real = scoring.document_ranking

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(scoring, "document_ranking", spy)
    return calls


def _run(tenant, pk) -> EvalRun:
    with tenant_scope(tenant):
        return EvalRun.objects.get(pk=pk)


# ---------------------------------------------------------------- services

def test_start_queues_a_run_and_sends_the_task_after_commit(tenant_a, kb_a, sent, searches,
                                                            django_capture_on_commit_callbacks):
    tenant = tenant_a.tenant
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = eval_run_start(tenant=tenant, kb=kb_a, user=tenant_a.admin, k=5)
    assert run.status == "queued" and run.question_count == len(TOPICS) and run.progress == 0
    assert run.k == 5 and run.created_by == tenant_a.admin and len(run.question_ids) == len(TOPICS)
    assert run.settings["mode"] == "bm25" and "fusion" in run.settings  # the snapshot of the KB's settings
    assert sent == [] and searches == []  # nothing is sent before the commit, nothing is scored in the request
    for callback in callbacks:
        callback()
    assert sent == [{"run_id": run.pk, "tenant_id": tenant.pk}]
    assert _run(tenant, run.pk).status == "queued"


def test_execute_scores_the_questions_once(tenant_a, kb_a, searches):
    tenant = tenant_a.tenant
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "done"
    assert len(searches) == len(TOPICS)
    # A second delivery of the same message (redelivered after a restart, or sent twice) does nothing.
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "skipped"
    assert len(searches) == len(TOPICS)
    run = _run(tenant, run.pk)
    assert run.status == "done" and run.attempts == 1 and run.claim_token == ""
    assert run.progress == run.question_count == len(TOPICS) and len(run.per_question) == len(TOPICS)
    assert run.ndcg_at_10 == pytest.approx(1.0) and run.recall_at_k == pytest.approx(1.0) and run.mrr == 1.0
    assert run.started_at and run.finished_at and run.duration_ms > 0
    with tenant_scope(tenant):
        assert EvalRun.objects.filter(kb=kb_a).count() == 1


def test_a_run_claimed_by_another_worker_is_left_alone(tenant_a, kb_a, searches):
    tenant = tenant_a.tenant
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    with tenant_scope(tenant):
        EvalRun.objects.filter(pk=run.pk).update(status="running", claim_token="other", heartbeat_at=timezone.now())
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "skipped"
    assert searches == [] and _run(tenant, run.pk).claim_token == "other"


def test_a_run_whose_worker_died_is_claimed_again(tenant_a, kb_a, settings):
    settings.JOBS_STALE_AFTER_SECONDS = 60
    tenant = tenant_a.tenant
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    with tenant_scope(tenant):
        EvalRun.objects.filter(pk=run.pk).update(status="running", claim_token="dead", attempts=1, progress=2,
                                                 heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "done"
    run = _run(tenant, run.pk)
    assert run.status == "done" and run.attempts == 2 and run.progress == len(TOPICS)


def test_failure_sets_failed_with_a_readable_error(tenant_a, kb_a, monkeypatch):
    tenant = tenant_a.tenant
    calls = []

    def broken(**kwargs):
        calls.append(kwargs)
        if len(calls) == 3:
            raise ValueError("the index is corrupt")
        return []

    monkeypatch.setattr(scoring, "document_ranking", broken)
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "failed"
    run = _run(tenant, run.pk)
    assert run.status == "failed" and run.claim_token == "" and run.finished_at is not None
    assert run.error == "The evaluation failed: ValueError: the index is corrupt"
    assert run.ndcg_at_10 is None and run.per_question == []
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "skipped"  # failed is final


def test_transient_error_requeues_then_gives_up(tenant_a, kb_a, monkeypatch):
    tenant = tenant_a.tenant

    def database_down(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(scoring, "document_ranking", database_down)
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    for attempt in range(1, runs.EVAL_MAX_ATTEMPTS):
        with pytest.raises(OperationalError):  # raised again so that the task retries with backoff
            eval_run_execute(tenant=tenant, run_id=run.pk)
        requeued = _run(tenant, run.pk)
        assert requeued.status == "queued" and requeued.attempts == attempt and requeued.claim_token == ""
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "failed"
    failed = _run(tenant, run.pk)
    assert failed.status == "failed" and "database was unavailable" in failed.error


def test_progress_is_written_while_running(tenant_a, kb_a, monkeypatch):
    tenant = tenant_a.tenant
    monkeypatch.setattr(runs, "PROGRESS_EVERY", 2)
    monkeypatch.setattr(runs, "PROGRESS_SECONDS", 3600)
    seen = []
    real = scoring.document_ranking

    def spy(**kwargs):
        row = EvalRun.objects.values("status", "progress").get(pk=run.pk)
        seen.append((row["status"], row["progress"]))
        return real(**kwargs)

    monkeypatch.setattr(scoring, "document_ranking", spy)
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    eval_run_execute(tenant=tenant, run_id=run.pk)
    assert seen == [("running", 0), ("running", 0), ("running", 2), ("running", 2), ("running", 4), ("running", 4)]


def test_run_uses_the_settings_and_questions_fixed_at_start(tenant_a, kb_a, searches):
    tenant = tenant_a.tenant
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False, options={"fusion": "rrf"})
    with tenant_scope(tenant):
        # The admin changes the settings and the questions while the run waits for a worker.
        KnowledgeBase.objects.filter(pk=kb_a.pk).update(retrieval={"mode": "dense", "fusion": "zscore"})
        doc = make_indexed_document(tenant, kb_a, ["Late text."], title="Late")
    eval_question_create(tenant=tenant, kb=kb_a, text="late question", document_ids=[doc.pk])
    eval_run_execute(tenant=tenant, run_id=run.pk)
    run = _run(tenant, run.pk)
    assert run.settings["mode"] == "bm25" and run.settings["fusion"] == "rrf"
    assert {call["options"]["mode"] for call in searches} == {"bm25"}
    assert {call["options"]["fusion"] for call in searches} == {"rrf"}
    assert len(searches) == run.question_count == len(TOPICS)


def test_questions_deleted_after_start_are_skipped(tenant_a, kb_a):
    tenant = tenant_a.tenant
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    with tenant_scope(tenant):
        kb_a.eval_questions.filter(pk__in=run.question_ids[:2]).delete()
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "done"
    run = _run(tenant, run.pk)
    assert run.question_count == len(run.per_question) == len(TOPICS) - 2
    with tenant_scope(tenant):
        kb_a.eval_questions.all().delete()
    with pytest.raises(EvalRunError):  # nothing left to evaluate
        eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)


def test_all_questions_gone_before_the_worker_fails_the_run(tenant_a, kb_a):
    tenant = tenant_a.tenant
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    with tenant_scope(tenant):
        kb_a.eval_questions.all().delete()
    assert eval_run_execute(tenant=tenant, run_id=run.pk) == "failed"
    assert "questions were deleted" in _run(tenant, run.pk).error


def test_one_active_run_per_kb_and_stale_runs_are_failed(tenant_a, kb_a, settings):
    settings.JOBS_STALE_AFTER_SECONDS = 60
    tenant = tenant_a.tenant
    first = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    with pytest.raises(EvalRunBusy) as busy:
        eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    assert busy.value.run.pk == first.pk
    # The worker died long ago: the next start fails the stuck run and starts a new one.
    with tenant_scope(tenant):
        EvalRun.objects.filter(pk=first.pk).update(status="running", claim_token="dead",
                                                   heartbeat_at=timezone.now() - timedelta(minutes=5))
    second = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    assert _run(tenant, first.pk).status == "failed" and "worker stopped" in _run(tenant, first.pk).error
    assert second.status == "queued"


@pytest.mark.parametrize("kwargs, field", [
    ({"k": 0}, "k"), ({"k": 51}, "k"), ({"k": "many"}, "k"),
    ({"options": {"mode": "psychic"}}, "options"), ({"options": {"nonsense": 1}}, "options"),
])
def test_start_validation(tenant_a, kb_a, kwargs, field):
    with pytest.raises(EvalRunError) as error:
        eval_run_start(tenant=tenant_a.tenant, kb=kb_a, enqueue=False, **kwargs)
    assert field in error.value.fields
    with tenant_scope(tenant_a.tenant):
        assert not EvalRun.objects.exists()


def test_broker_down_fails_the_run_instead_of_leaving_it_queued(tenant_a, kb_a, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    from knowledge.search.tasks import run_evaluation

    def refuse(**kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(run_evaluation, "delay", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        run = eval_run_start(tenant=tenant_a.tenant, kb=kb_a)
    run = _run(tenant_a.tenant, run.pk)
    assert run.status == "failed" and "worker" in run.error


# ---------------------------------------------------------------- the task

def test_task_is_registered_with_the_celery_app():
    from config.celery import app

    app.loader.import_default_modules()
    assert "knowledge.search.run_evaluation" in app.tasks


def test_task_runs_the_service_and_retries_transient_errors(tenant_a, kb_a, monkeypatch):
    from knowledge.search.tasks import run_evaluation

    tenant = tenant_a.tenant
    real = scoring.document_ranking
    failures = []

    def flaky(**kwargs):
        if not failures:
            failures.append(1)
            raise OperationalError("connection reset")
        return real(**kwargs)

    monkeypatch.setattr(scoring, "document_ranking", flaky)
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    result = run_evaluation.apply(kwargs={"run_id": run.pk, "tenant_id": tenant.pk})  # eager, retries inline
    assert result.get() == "done"
    run = _run(tenant, run.pk)
    assert run.status == "done" and run.attempts == 2 and run.ndcg_at_10 == pytest.approx(1.0)
    assert run_evaluation.apply(kwargs={"run_id": run.pk, "tenant_id": 987654321}).get() == "gone"


# ---------------------------------------------------------------- pages

def test_starting_from_the_page_returns_at_once_with_a_queued_run(client_a, tenant_a, kb_a, sent, searches,
                                                                  django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_a.post(f"/knowledge/search/{kb_a.pk}/evaluation/run/", follow=True)
    assert response.status_code == 200
    with tenant_scope(tenant_a.tenant):
        run = EvalRun.objects.get(kb=kb_a)
    assert searches == []  # no question was scored inside the request
    assert run.status == "queued" and sent == [{"run_id": run.pk, "tenant_id": tenant_a.tenant.pk}]
    html = response.content.decode()
    assert f"Evaluation #{run.pk} started with {len(TOPICS)} questions" in html
    assert "Waiting for a worker" in html and 'hx-trigger="every 2s"' in html
    # A second click while it is queued is refused with a message, not a second run.
    response = client_a.post(f"/knowledge/search/{kb_a.pk}/evaluation/run/", follow=True)
    assert "already in progress" in response.content.decode()
    with tenant_scope(tenant_a.tenant):
        assert EvalRun.objects.filter(kb=kb_a).count() == 1


def test_run_detail_shows_progress_then_results(client_a, tenant_a, kb_a):
    tenant = tenant_a.tenant
    run = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    with tenant_scope(tenant):
        EvalRun.objects.filter(pk=run.pk).update(status="running", progress=3, heartbeat_at=timezone.now())
    url = f"/knowledge/search/runs/{run.pk}/"
    page = client_a.get(url).content.decode()
    assert "<progress" in page and 'value="50"' in page and "3 / 6 questions" in page
    assert f'hx-get="{url}"' in page and 'hx-trigger="every 2s"' in page
    partial = client_a.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial and 'id="run-body"' in partial and "3 / 6 questions" in partial
    with tenant_scope(tenant):
        EvalRun.objects.filter(pk=run.pk).update(status="queued", progress=0)
    eval_run_execute(tenant=tenant, run_id=run.pk)
    done = client_a.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in done and "<progress" not in done  # finished: polling stops
    assert "nDCG@10 <strong>1.000</strong>" in done and "password rotation policy" in done


def test_failed_run_page_shows_the_error_without_polling(client_a, tenant_a, kb_a, monkeypatch):
    monkeypatch.setattr(scoring, "document_ranking", lambda **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    run = eval_run_start(tenant=tenant_a.tenant, kb=kb_a, enqueue=False)
    eval_run_execute(tenant=tenant_a.tenant, run_id=run.pk)
    page = client_a.get(f"/knowledge/search/runs/{run.pk}/").content.decode()
    assert "RuntimeError: boom" in page and "hx-trigger" not in page


def test_history_polls_while_active_and_charts_done_runs_only(client_a, tenant_a, kb_a):
    tenant = tenant_a.tenant
    for _ in range(2):
        eval_run_create(tenant=tenant, kb=kb_a)
    failed = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    with tenant_scope(tenant):
        EvalRun.objects.filter(pk=failed.pk).update(status="failed", error="The evaluation failed: X")
    running = eval_run_start(tenant=tenant, kb=kb_a, enqueue=False)
    with tenant_scope(tenant):
        EvalRun.objects.filter(pk=running.pk).update(status="running", progress=1, heartbeat_at=timezone.now())
    page = client_a.get(f"/knowledge/search/{kb_a.pk}/evaluation/").content.decode()
    runs_url = f"/knowledge/search/{kb_a.pk}/evaluation/runs/"
    assert f'hx-get="{runs_url}"' in page and "1 / 6 questions" in page and "The evaluation failed: X" in page
    assert page.count("<circle") == 2 * 3  # two done runs x three metrics; failed and running are not plotted
    assert f">#{failed.pk}<" not in page.split("</svg>")[0] and f">#{running.pk}<" not in page.split("</svg>")[0]
    partial = client_a.get(runs_url, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and "<html" not in partial.content.decode()
    assert 'hx-trigger="every 2s"' in partial.content.decode()
    with tenant_scope(tenant):
        EvalRun.objects.filter(pk=running.pk).update(status="done", ndcg_at_10=0.5, recall_at_k=0.5, mrr=0.5)
    settled = client_a.get(runs_url).content.decode()
    assert "hx-trigger" not in settled and settled.count("<circle") == 3 * 3
    assert web_client(tenant_a.member, tenant).get(runs_url).status_code == 403


def test_korean_progress_labels(client_a, tenant_a, kb_a):
    run = eval_run_start(tenant=tenant_a.tenant, kb=kb_a, enqueue=False)
    page = client_a.get(f"/knowledge/search/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "작업자 대기 중" in page and "질문 6개" in page
    with tenant_scope(tenant_a.tenant):
        EvalRun.objects.filter(pk=run.pk).update(status="running", progress=3, heartbeat_at=timezone.now())
    page = client_a.get(f"/knowledge/search/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "실행 중" in page and "질문 3 / 6개" in page


def test_pages_stop_waiting_for_a_stalled_run(client_a, tenant_a, kb_a, settings):
    settings.JOBS_STALE_AFTER_SECONDS = 60
    run = eval_run_start(tenant=tenant_a.tenant, kb=kb_a, enqueue=False)
    with tenant_scope(tenant_a.tenant):
        EvalRun.objects.filter(pk=run.pk).update(status="running", progress=2,
                                                 heartbeat_at=timezone.now() - timedelta(minutes=5))
    for url in (f"/knowledge/search/runs/{run.pk}/", f"/knowledge/search/{kb_a.pk}/evaluation/"):
        page = client_a.get(url).content.decode()
        assert "the worker may have stopped" in page and "hx-trigger" not in page
    history = client_a.get(f"/knowledge/search/{kb_a.pk}/evaluation/runs/").content.decode()
    assert '<button class="primary" >' in history  # "Run evaluation" is enabled again: a new run replaces it
