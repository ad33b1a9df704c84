from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from accounts.decorators import tenant_admin_required, tenant_required
from knowledge import selectors, services
from knowledge.forms import KnowledgeBaseForm
from knowledge.parsers import EXTENSIONS
from knowledge.uploads import declared_too_large, install_limit


def _errors_to_form(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


@tenant_required
def kb_list(request):
    context = {"kbs": selectors.kb_list(tenant=request.tenant)}
    return render(request, "knowledge/kb_list.html", context)


@tenant_admin_required
def kb_create(request):
    form = KnowledgeBaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            kb = services.kb_create(tenant=request.tenant, created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            _errors_to_form(form, exc)
        else:
            messages.success(request, _("Knowledge base created. Add documents below."))
            return redirect("knowledge:kb-detail", kb_id=kb.pk)
    return render(request, "knowledge/kb_form.html", {"form": form, "kb": None})


DOCUMENTS_PER_PAGE = 50


def _documents_context(request, kb):
    # get_page: a missing or malformed number shows the first page, one past the end the last.
    page = Paginator(selectors.document_list(tenant=request.tenant, kb=kb), DOCUMENTS_PER_PAGE).get_page(
        request.GET.get("page"))
    documents = list(page.object_list)
    return {
        "kb": kb,
        "documents": documents,
        "page": page,
        "page_query": f"?page={page.number}" if page.number > 1 else "",
        "polling": any(d.is_active for d in documents),
        "stats": selectors.kb_stats(tenant=request.tenant, kb=kb),
        "vectors": selectors.kb_vectors(tenant=request.tenant, kb=kb),
        "can_edit": request.membership.is_admin,
    }


@tenant_required
def kb_detail(request, kb_id: int):
    kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
    context = _documents_context(request, kb)
    context.update({
        "extensions": ",".join(EXTENSIONS),
        "extensions_text": ", ".join(EXTENSIONS),
        "max_upload_bytes": services.max_upload_bytes(),
        "max_upload_mb": services.max_upload_bytes() // (1024 * 1024),
    })
    return render(request, "knowledge/kb_detail.html", context)


@tenant_required
def kb_documents(request, kb_id: int):
    """The documents table alone: the KB page polls it with htmx while anything is being processed."""
    kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
    return render(request, "knowledge/_documents.html", _documents_context(request, kb))


@tenant_admin_required
def kb_edit(request, kb_id: int):
    kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
    form = KnowledgeBaseForm(request.POST or None, kb=kb)
    if request.method == "POST" and form.is_valid():
        reindexing = (form.cleaned_data["chunk_size"], form.cleaned_data["chunk_overlap"]) != (kb.chunk_size,
                                                                                              kb.chunk_overlap)
        try:
            services.kb_update(tenant=request.tenant, kb=kb, **form.cleaned_data)
        except ValidationError as exc:
            _errors_to_form(form, exc)
        else:
            upgrading_to = selectors.kb_vectors(tenant=request.tenant, kb=kb)["upgrading_to"]
            if reindexing:
                messages.success(request, _("Settings saved; every document is being re-indexed."))
            elif upgrading_to and upgrading_to == form.cleaned_data["embedding_model"]:
                messages.success(request, _("Settings saved; the vectors are being computed again with %(model)s in "
                                            "the background. Searches use the current ones until then.")
                                 % {"model": upgrading_to})
            else:
                messages.success(request, _("Settings saved."))
            return redirect("knowledge:kb-detail", kb_id=kb.pk)
    return render(request, "knowledge/kb_form.html", {"form": form, "kb": kb})


@tenant_admin_required
def kb_delete(request, kb_id: int):
    kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
    if request.method == "POST":
        services.kb_delete(tenant=request.tenant, kb=kb)
        messages.success(request, _("Knowledge base %(name)s deleted.") % {"name": kb.name})
        return redirect("knowledge:kb-list")
    stats = selectors.kb_stats(tenant=request.tenant, kb=kb)
    return render(request, "knowledge/kb_delete.html", {"kb": kb, "stats": stats})


@tenant_admin_required
@require_POST
def kb_reindex(request, kb_id: int):
    kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
    count = services.kb_reindex(tenant=request.tenant, kb=kb)
    messages.success(request, _("Re-indexing %(count)s documents.") % {"count": count})
    return redirect("knowledge:kb-detail", kb_id=kb.pk)


def _upload_error(message: str, status: int, code: str) -> JsonResponse:
    return JsonResponse({"ok": False, "code": code, "message": str(message)}, status=status)


@csrf_exempt  # only so the size limit is installed before the CSRF check reads the body; checked below
@tenant_admin_required
@require_POST
def kb_upload(request, kb_id: int):
    """One file per request (the page sends files in parallel and shows each one's progress). JSON reply."""
    kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
    if declared_too_large(request):
        return _upload_error(services.too_large_message(), 413, "too_large")
    limiter = install_limit(request)
    return _kb_upload_checked(request, kb, limiter)


def _wants_json(request) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest" or "json" in request.headers.get("Accept", "")


@csrf_protect
def _kb_upload_checked(request, kb, limiter):
    if not _wants_json(request):
        return _kb_upload_form(request, kb, limiter)
    upload = request.FILES.get("file")
    if limiter.exceeded:
        return _upload_error(services.too_large_message(), 413, "too_large")
    if upload is None:
        return _upload_error(_("Choose a file to upload."), 400, "no_file")
    try:
        document, created = services.document_create(
            tenant=request.tenant, kb=kb, upload=upload, uploaded_by=request.user,
            title=request.POST.get("title", "").strip(),
        )
    except services.UploadRejected as exc:
        return _upload_error(exc.message, exc.status, exc.code)
    body = {
        "ok": True, "duplicate": not created, "document_id": document.pk, "title": document.title,
        "status": document.status,
        "url": reverse("knowledge:document-detail", kwargs={"document_id": document.pk}),
        # The row stays as the upload left it; the documents list below shows the live indexing status.
        "message": _("Uploaded; its indexing progress shows in the documents list.") if created else
        _("Already in this knowledge base as “%(title)s”; not indexed again.") % {"title": document.title},
    }
    return JsonResponse(body, status=201 if created else 200)


def _kb_upload_form(request, kb, limiter):
    """The page's plain form (no JavaScript): several files in one post, one message per file."""
    if limiter.exceeded:
        messages.error(request, services.too_large_message())
        return redirect("knowledge:kb-detail", kb_id=kb.pk)
    uploads = request.FILES.getlist("file")
    if not uploads:
        messages.error(request, _("Choose a file to upload."))
    for upload in uploads:
        try:
            document, created = services.document_create(tenant=request.tenant, kb=kb, upload=upload,
                                                         uploaded_by=request.user)
        except services.UploadRejected as exc:
            messages.error(request, f"{upload.name}: {exc.message}")
            continue
        if created:
            messages.success(request, f"{upload.name}: {_('Queued for indexing.')}")
        else:
            messages.info(request, f"{upload.name}: " + _(
                "Already in this knowledge base as “%(title)s”; not indexed again.") % {"title": document.title})
    return redirect("knowledge:kb-detail", kb_id=kb.pk)


CHUNKS_PER_PAGE = 50


@tenant_required
def document_detail(request, document_id: int):
    document = selectors.document_get(tenant=request.tenant, document_id=document_id)
    context = {"document": document, "kb": document.kb, "can_edit": request.membership.is_admin}
    if request.htmx:  # the status line, polled while the document is processed
        return render(request, "knowledge/_document_status.html", context)
    # Each chunk's full text, a page at a time (a document may have thousands).
    context["chunks"] = Paginator(selectors.chunk_list(tenant=request.tenant, document=document),
                                  CHUNKS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "knowledge/document_detail.html", context)


def _back_to_kb(document):
    return redirect("knowledge:kb-detail", kb_id=document.kb_id)


@tenant_admin_required
@require_POST
def document_retry(request, document_id: int):
    document = selectors.document_get(tenant=request.tenant, document_id=document_id)
    try:
        services.document_retry(tenant=request.tenant, document=document)
    except services.NotRetryable as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("“%(title)s” queued again.") % {"title": document.title})
    return _back_to_kb(document)


@tenant_admin_required
@require_POST
def document_reindex(request, document_id: int):
    document = selectors.document_get(tenant=request.tenant, document_id=document_id)
    services.document_reindex(tenant=request.tenant, document=document)
    messages.success(request, _("“%(title)s” is being re-indexed.") % {"title": document.title})
    return _back_to_kb(document)


@tenant_admin_required
@require_POST
def document_delete(request, document_id: int):
    document = selectors.document_get(tenant=request.tenant, document_id=document_id)
    services.document_delete(tenant=request.tenant, document=document)
    messages.success(request, _("“%(title)s” deleted.") % {"title": document.title})
    return _back_to_kb(document)
