"""The drill's database checks (scripts/stack_drill.py), run inside an app container of the stack:

    podman cp scripts/stack_drill_check.py CONTAINER:/tmp/
    podman exec -e DRILL_SPEC='{"kbs": {...}, "assistants": {...}}' CONTAINER python /tmp/stack_drill_check.py

DRILL_SPEC names the drill's knowledge bases and assistants per tenant label. Prints one JSON object: per tenant,
each document's state against the chunks its stored file should make (parsed and chunked again here, apart from
the pipeline's run), every answer's state, and the usage ledger against the answers' own usage.
"""

import json
import os
import statistics
import sys

import django

sys.path.insert(0, os.getcwd())  # the app's folder: /app in the image
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django.setup()

from django.db.models import Count, Q, Sum  # noqa: E402

from accounts.tenancy import system_scope  # noqa: E402
from billing.models import UsageRecord  # noqa: E402
from billing.types import Stage  # noqa: E402
from chat.models import Message  # noqa: E402
from knowledge import chunking, parsers  # noqa: E402
from knowledge.models import Chunk, Document, KnowledgeBase  # noqa: E402


def seconds(start, end) -> float | None:
    return (end - start).total_seconds() if start and end else None


def p50(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def expected_chunks(document: Document, kb: KnowledgeBase) -> int:
    with document.file.storage.open(document.file.name, "rb") as fh:
        data = fh.read()
    parsed = parsers.parse(parsers.format_for(document.filename), data, filename=document.filename)
    return len(chunking.chunk_document(parsed, size=kb.chunk_size, overlap=kb.chunk_overlap))


def documents_report(kb: KnowledgeBase) -> dict:
    documents, by_status = [], {}
    for document in Document.objects.filter(kb=kb).order_by("id"):
        ordinals = list(Chunk.objects.filter(document=document).values_list("ordinal", flat=True))
        expected = expected_chunks(document, kb)
        by_status[document.status] = by_status.get(document.status, 0) + 1
        documents.append({
            "id": document.pk, "filename": document.filename, "sha256": document.sha256, "status": document.status,
            "error": document.error, "attempts": document.attempts, "expected": expected, "chunks": len(ordinals),
            "exact": sorted(ordinals) == list(range(expected)),
            # rows beyond one per expected ordinal: a chunk written twice, or by a run that should have stopped
            "duplicates": len(ordinals) - len(set(ordinals)) + len([o for o in set(ordinals) if o >= expected]),
            "ready_s": seconds(document.created_at, document.finished_at),
            "started_at": document.started_at.timestamp() if document.started_at else None,
            "finished_at": document.finished_at.timestamp() if document.finished_at else None,
        })
    duplicate_files = len(documents) - len({d["sha256"] for d in documents})
    return {"documents": documents, "by_status": by_status, "duplicate_files": duplicate_files,
            "ready_p50_s": p50(d["ready_s"] for d in documents if d["status"] == Document.Status.READY),
            "ready_max_s": max((d["ready_s"] or 0 for d in documents), default=None)}


def answers_report(assistant_id: int) -> dict:
    answers = Message.objects.filter(conversation__assistant_id=assistant_id, role=Message.Role.ASSISTANT)
    by_status = dict(answers.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    unclear = answers.filter(status=Message.Status.FAILED).filter(Q(error_code="") | Q(error="")).count()
    ledger_mismatches = []
    for answer in answers.filter(status=Message.Status.DONE, answered_by="generative"):
        billed = UsageRecord.objects.filter(tenant_id=answer.tenant_id, message_id=answer.pk, stage=Stage.ANSWER)
        sums = billed.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"))
        if (sums["i"] or 0, sums["o"] or 0) != (answer.input_tokens, answer.output_tokens):
            ledger_mismatches.append({"message": answer.pk, "ledger": sums,
                                      "answer": [answer.input_tokens, answer.output_tokens]})
    errors = sorted({f"{code}: {text[:80]}" for code, text in
                     answers.filter(status=Message.Status.FAILED).values_list("error_code", "error")})
    return {"count": answers.count(), "by_status": by_status,
            "stuck": answers.exclude(status__in=Message.FINAL).count(), "unclear_failures": unclear,
            "answered_by": dict(answers.values_list("answered_by").annotate(n=Count("id")).values_list(
                "answered_by", "n")),
            "latency_p50_s": p50(seconds(m.created_at, m.finished_at) for m in answers.filter(
                status=Message.Status.DONE)),
            "ledger_mismatches": ledger_mismatches, "errors": errors}


def model_usage(tenant_ids: list[int]) -> dict:
    """Everything the ledger billed for calls to the drill's model server, all stages."""
    sums = UsageRecord.objects.filter(tenant_id__in=tenant_ids, provider="ollama").aggregate(
        calls=Count("id"), input=Sum("input_tokens"), output=Sum("output_tokens"))
    return {key: value or 0 for key, value in sums.items()}


def main() -> None:
    spec = json.loads(os.environ["DRILL_SPEC"])
    report = {"tenants": {}}
    with system_scope():
        tenant_ids = []
        for label, kb_ids in spec["kbs"].items():
            kbs = {name: KnowledgeBase.objects.get(pk=pk) for name, pk in kb_ids.items()}
            tenant_ids.append(next(iter(kbs.values())).tenant_id)
            report["tenants"][label] = {
                "kbs": {name: documents_report(kb) for name, kb in kbs.items()},
                "answers": answers_report(spec["assistants"][label]),
            }
        report["ledger"] = model_usage(tenant_ids)
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
