"""Admin pages of a KB's retrieval: the retrieval test page, settings, and evaluation (questions, runs, chart)."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.decorators import tenant_admin_required
from accounts.selectors import tenant_object_or_404
from accounts.tenancy import tenant_scope
from billing.errors import QuotaExceeded
from knowledge.models import Document, KnowledgeBase
from knowledge.search.charts import runs_chart
from knowledge.search.config import SettingsError, clean_settings, settings_for
from knowledge.search.coverage import probably_not_covered
from knowledge.search.evaluation import selectors as eval_selectors
from knowledge.search.evaluation import services as eval_services
from knowledge.search.evaluation.files import UploadError
from knowledge.search.evaluation.runs import eval_run_is_stale
from knowledge.search.forms import EvalQuestionForm, EvalUploadForm, RetrievalSettingsForm, TestSearchForm
from knowledge.search.models import EvalQuestion, EvalRun
from knowledge.search.selectors import SearchError, search, search_payer
from knowledge.selectors import kb_vectors
from knowledge.services import kb_update

MAX_UPLOAD_BYTES = 5 * 1024 * 1024


def _kb(request, kb_id) -> KnowledgeBase:
    return tenant_object_or_404(KnowledgeBase, tenant=request.tenant, pk=kb_id)


@tenant_admin_required
def retrieval_test(request, kb_id: int):
    kb = _kb(request, kb_id)
    form = TestSearchForm(request.GET or None, initial={"k": settings_for(kb).k})
    result = error = None
    if request.GET and form.is_valid():
        try:
            result = search(tenant=request.tenant, kb_ids=[kb.pk], query=form.cleaned_data["query"],
                            k=form.cleaned_data["k"], options={"mode": form.cleaned_data["mode"]},
                            usage=search_payer(user_id=request.user.pk))
        except (SearchError, QuotaExceeded) as exc:
            error = exc.message
    uncovered = result is not None and probably_not_covered(result, embedding_models=[kb.embedding_model])
    context = {"kb": kb, "form": form, "result": result, "error": error, "uncovered": uncovered, "tab": "test",
               "vectors": kb_vectors(tenant=request.tenant, kb=kb)}
    template = "knowledge/search/_test_results.html" if request.htmx else "knowledge/search/test.html"
    return render(request, template, context)


@tenant_admin_required
def retrieval_settings(request, kb_id: int):
    kb = _kb(request, kb_id)
    current = settings_for(kb)
    form = RetrievalSettingsForm.for_settings(current, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        values = {key: value for key, value in form.cleaned_data.items()}
        try:
            cleaned = clean_settings(values)
        except SettingsError as exc:
            for field, message in exc.fields.items():
                form.add_error(field if field in form.fields else None, message)
        else:
            kb_update(tenant=request.tenant, kb=kb, retrieval={**(kb.retrieval or {}), **cleaned})
            messages.success(request, _("Retrieval settings saved."))
            return redirect("search:settings", kb_id=kb.pk)
    return render(request, "knowledge/search/settings.html", {"kb": kb, "form": form, "tab": "settings"})


def _documents(request, kb):
    with tenant_scope(request.tenant):
        return list(Document.objects.filter(tenant=request.tenant, kb=kb).order_by("title").values_list("pk", "title")[:2000])


def _runs_context(request, kb) -> dict:
    runs = list(eval_selectors.eval_run_list(tenant=request.tenant, kb=kb)[:30])
    done = [run for run in reversed(runs) if run.status == EvalRun.Status.DONE]  # oldest first, finished only
    for run in runs:
        run.stale = eval_run_is_stale(run)
    return {"kb": kb, "runs": runs, "polling": any(run.is_active and not run.stale for run in runs),
            "chart": runs_chart(done, title=_("Evaluation runs of %(kb)s") % {"kb": kb.name}),
            "has_questions": eval_selectors.eval_question_list(tenant=request.tenant, kb=kb).exists()}


@tenant_admin_required
def evaluation_home(request, kb_id: int):
    kb = _kb(request, kb_id)
    with tenant_scope(request.tenant):
        questions = list(eval_selectors.eval_question_list(tenant=request.tenant, kb=kb))
        context = _runs_context(request, kb)
    return render(request, "knowledge/search/evaluation.html", {
        **context, "questions": questions, "tab": "evaluation",
        "question_form": EvalQuestionForm(documents=_documents(request, kb)), "upload_form": EvalUploadForm(),
    })


@tenant_admin_required
def evaluation_runs(request, kb_id: int):
    """The runs section alone (chart, history, start button): the evaluation page polls it with htmx while a
    run is queued or running."""
    kb = _kb(request, kb_id)
    with tenant_scope(request.tenant):
        context = _runs_context(request, kb)
    return render(request, "knowledge/search/_runs.html", context)


@tenant_admin_required
@require_POST
def evaluation_question_add(request, kb_id: int):
    kb = _kb(request, kb_id)
    form = EvalQuestionForm(request.POST, documents=_documents(request, kb))
    if form.is_valid():
        try:
            eval_services.eval_question_create(tenant=request.tenant, kb=kb, text=form.cleaned_data["text"],
                                            document_ids=[int(i) for i in form.cleaned_data["documents"]])
            messages.success(request, _("Question added."))
        except UploadError as exc:
            messages.error(request, str(exc))
    else:
        messages.error(request, _("Enter a question and choose at least one expected document."))
    return redirect("search:evaluation", kb_id=kb.pk)


@tenant_admin_required
@require_POST
def evaluation_upload(request, kb_id: int):
    kb = _kb(request, kb_id)
    form = EvalUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, _("Choose a JSONL or CSV file."))
        return redirect("search:evaluation", kb_id=kb.pk)
    upload = form.cleaned_data["file"]
    if upload.size > MAX_UPLOAD_BYTES:
        messages.error(request, _("The file is larger than 5 MB."))
        return redirect("search:evaluation", kb_id=kb.pk)
    try:
        outcome = eval_services.eval_questions_import(tenant=request.tenant, kb=kb, data=upload.read(),
                                                   filename=upload.name)
    except UploadError as exc:
        messages.error(request, str(exc))
    else:
        text = _("%(n)s questions imported.") % {"n": outcome["created"]}
        if outcome["with_unresolved"]:
            text += " " + _("%(n)s name documents that were not found; they are marked below.") % {
                "n": outcome["with_unresolved"]}
        messages.success(request, text)
    return redirect("search:evaluation", kb_id=kb.pk)


@tenant_admin_required
@require_POST
def evaluation_question_delete(request, eval_question_id: int):
    question = tenant_object_or_404(EvalQuestion, tenant=request.tenant, pk=eval_question_id)
    kb_id = question.kb_id
    eval_services.eval_question_delete(tenant=request.tenant, question=question)
    messages.success(request, _("Question deleted."))
    return redirect("search:evaluation", kb_id=kb_id)


@tenant_admin_required
@require_POST
def evaluation_run(request, kb_id: int):
    """Start a run and return at once: a worker scores the questions, the page shows its progress."""
    kb = _kb(request, kb_id)
    try:
        run = eval_services.eval_run_start(tenant=request.tenant, kb=kb, user=request.user)
    except eval_services.EvalRunError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("Evaluation #%(id)s started with %(n)s questions; the results appear below "
                                    "when it finishes.") % {"id": run.pk, "n": run.question_count})
    return redirect("search:evaluation", kb_id=kb.pk)


@tenant_admin_required
def evaluation_run_detail(request, eval_run_id: int):
    """A run's page; while the run is queued or running, htmx polls it for the body (progress, then results)."""
    run = eval_selectors.eval_run_get(tenant=request.tenant, run_id=eval_run_id)
    run.stale = eval_run_is_stale(run)
    with tenant_scope(request.tenant):
        kb = run.kb
        ids = {d for row in run.per_question for d in row.get("found", []) + row.get("expected", [])}
        titles = dict(Document.objects.filter(tenant=request.tenant, pk__in=ids).values_list("pk", "title"))
    rows = [{**row, "found_titles": [(d, titles.get(d, f"#{d}"), d in row.get("expected", [])) for d in row.get("found", [])],
             "expected_titles": [titles.get(d, f"#{d}") for d in row.get("expected", [])]} for row in run.per_question]
    template = "knowledge/search/_run_body.html" if request.htmx else "knowledge/search/run_detail.html"
    return render(request, template, {"kb": kb, "run": run, "rows": rows, "tab": "evaluation"})
