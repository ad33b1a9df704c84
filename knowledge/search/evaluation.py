"""Retrieval evaluation: a KB's own test questions (the product feature) and BEIR-style benchmark folders
(the evaluate_retrieval command and bench/retrieval_quality.py).

Metrics are computed on documents: a ranking of chunks collapses to the ranking of their documents (a
document ranks where its best chunk ranks).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.search.beir import Dataset
from knowledge.search.metrics import dedupe, mrr_at_k, ndcg_at_k, recall_at_k
from knowledge.search.models import EvalQuestion, EvalRun
from knowledge.search.selectors import search

MAX_QUESTIONS_PER_RUN = 1000
MAX_UPLOAD_QUESTIONS = 2000


# ---------------------------------------------------------------- rankings and metrics

def document_ranking(*, tenant, kb_ids: list[int], query: str, depth: int = 10, options: dict | None = None) -> list[int]:
    """Document ids, best first, at least `depth` distinct when the KBs have them."""
    k = min(100, max(depth * 3, depth))
    result = search(tenant=tenant, kb_ids=kb_ids, query=query, k=k, options=options)
    return dedupe(hit.document_id for hit in result.hits)[:max(depth, 10)]


def score_ranking(ranked: list, relevant: dict, k: int) -> dict[str, float]:
    return {"ndcg": ndcg_at_k(ranked, relevant, 10), "recall": recall_at_k(ranked, relevant, k),
            "rr": mrr_at_k(ranked, relevant, 10)}


# ---------------------------------------------------------------- the product feature: a KB's test questions

class UploadError(ValueError):
    pass


@dataclass
class ParsedQuestion:
    text: str
    refs: list[str]


def parse_questions(data: bytes, filename: str = "") -> list[ParsedQuestion]:
    """JSONL ({"question": str, "expected": [str|int, ...]} per line; "query"/"documents" also accepted) or
    CSV (columns question, expected; several expected documents separated by "|" or ";")."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(_("The file is not UTF-8 text.")) from exc
    rows: list[ParsedQuestion] = []
    is_jsonl = filename.lower().endswith((".jsonl", ".json")) or text.lstrip().startswith("{")
    if is_jsonl:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UploadError(_("Line %(n)s is not valid JSON.") % {"n": lineno}) from exc
            if not isinstance(obj, dict):
                raise UploadError(_("Line %(n)s is not a JSON object.") % {"n": lineno})
            question = str(obj.get("question") or obj.get("query") or obj.get("text") or "").strip()
            refs = obj.get("expected", obj.get("documents", obj.get("expected_documents", [])))
            if isinstance(refs, str | int):
                refs = [refs]
            if not question:
                raise UploadError(_("Line %(n)s has no question.") % {"n": lineno})
            rows.append(ParsedQuestion(question, [str(r).strip() for r in refs or [] if str(r).strip()]))
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        qcol = header.get("question") or header.get("query")
        ecol = header.get("expected") or header.get("documents") or header.get("expected_documents")
        if not qcol:
            raise UploadError(_("The CSV needs a 'question' column (and an 'expected' column)."))
        for lineno, row in enumerate(reader, 2):
            question = (row.get(qcol) or "").strip()
            if not question:
                raise UploadError(_("Row %(n)s has no question.") % {"n": lineno})
            raw = (row.get(ecol) or "") if ecol else ""
            refs = [r.strip() for r in raw.replace(";", "|").split("|") if r.strip()]
            rows.append(ParsedQuestion(question, refs))
    if not rows:
        raise UploadError(_("The file has no questions."))
    if len(rows) > MAX_UPLOAD_QUESTIONS:
        raise UploadError(_("At most %(n)s questions per file.") % {"n": MAX_UPLOAD_QUESTIONS})
    return rows


def resolve_refs(*, tenant, kb: KnowledgeBase, refs: list[str]) -> tuple[list[int], list[str]]:
    """Document ids for references given as document id, file name or title (case-insensitive)."""
    docs = list(Document.objects.filter(tenant=tenant, kb=kb).values_list("pk", "filename", "title"))
    by_id = {str(pk): pk for pk, _f, _t in docs}
    by_name = {}
    for pk, filename, title in docs:
        by_name.setdefault((filename or "").lower(), pk)
        by_name.setdefault((title or "").lower(), pk)
    found, missing = [], []
    for ref in refs:
        pk = by_id.get(ref) or by_name.get(ref.lower())
        if pk is None:
            missing.append(ref)
        elif pk not in found:
            found.append(pk)
    return found, missing


def eval_question_create(*, tenant, kb: KnowledgeBase, text: str, document_ids: list[int] | None = None,
                         refs: list[str] | None = None) -> EvalQuestion:
    text = (text or "").strip()
    if not text:
        raise UploadError(_("Enter a question."))
    with tenant_scope(tenant), transaction.atomic():
        ids = [int(i) for i in document_ids or []]
        valid = set(Document.objects.filter(tenant=tenant, kb=kb, pk__in=ids).values_list("pk", flat=True))
        if set(ids) - valid:
            raise UploadError(_("Expected documents must belong to this knowledge base."))
        missing: list[str] = []
        if refs:
            found, missing = resolve_refs(tenant=tenant, kb=kb, refs=refs)
            valid.update(found)
        question = EvalQuestion.objects.create(tenant=tenant, kb=kb, text=text[:4000], unresolved_refs=missing)
        question.expected_documents.set(sorted(valid))
    return question


def eval_questions_import(*, tenant, kb: KnowledgeBase, data: bytes, filename: str = "") -> dict:
    parsed = parse_questions(data, filename)
    created = unresolved = 0
    with tenant_scope(tenant), transaction.atomic():
        for item in parsed:
            question = eval_question_create(tenant=tenant, kb=kb, text=item.text, refs=item.refs)
            created += 1
            unresolved += bool(question.unresolved_refs)
    return {"created": created, "with_unresolved": unresolved}


def eval_question_delete(*, tenant, question: EvalQuestion) -> None:
    with tenant_scope(tenant):
        question.delete()


def eval_run_create(*, tenant, kb: KnowledgeBase, user=None, k: int = 10, options: dict | None = None) -> EvalRun:
    """Run every test question of the KB with its current retrieval settings and store the metrics."""
    from knowledge.search.config import settings_for

    k = max(1, min(int(k), 50))
    started = time.perf_counter()
    with tenant_scope(tenant):
        questions = list(
            EvalQuestion.objects.filter(tenant=tenant, kb=kb).prefetch_related("expected_documents")[:MAX_QUESTIONS_PER_RUN]
        )
        used = settings_for(kb, options or {}).as_dict()
        per_question = []
        totals = {"ndcg": 0.0, "recall": 0.0, "rr": 0.0}
        judged = 0
        for question in questions:
            expected = {d.pk: 1 for d in question.expected_documents.all()}
            if not expected:
                continue
            ranked = document_ranking(tenant=tenant, kb_ids=[kb.pk], query=question.text, depth=max(k, 10),
                                      options=options)
            scores = score_ranking(ranked, expected, k)
            judged += 1
            for key in totals:
                totals[key] += scores[key]
            per_question.append({"question_id": question.pk, "question": question.text[:200],
                                 "found": ranked[:k], "expected": sorted(expected), **{
                                     key: round(value, 4) for key, value in scores.items()}})
        run = EvalRun(tenant=tenant, kb=kb, k=k, question_count=judged, settings=used, per_question=per_question,
                      created_by=user if getattr(user, "pk", None) else None)
        if judged:
            run.ndcg_at_10 = totals["ndcg"] / judged
            run.recall_at_k = totals["recall"] / judged
            run.mrr = totals["rr"] / judged
        else:
            run.status = EvalRun.Status.FAILED
            run.error = _("No test question has an expected document yet.")
        run.duration_ms = (time.perf_counter() - started) * 1000
        run.save()
    return run


# ---------------------------------------------------------------- BEIR folders in a scratch tenant

def scratch_tenant(label: str) -> Tenant:
    slug = f"eval-{uuid.uuid4().hex[:12]}"
    return Tenant.objects.create(name=f"Evaluation {label}"[:120], slug=slug)


def detect_corpus_language(dataset: Dataset, sample: int = 200) -> str:
    from knowledge.search.analysis import hangul_ratio

    texts = [p.full_text for p in dataset.corpus[:sample]]
    ratio = float(np.mean([hangul_ratio(t) for t in texts])) if texts else 0.0
    return "ko" if ratio >= 0.2 else "en"


def load_dataset_into_kb(*, tenant: Tenant, dataset: Dataset, embedding_model: str, language: str,
                         vectors: np.ndarray | None = None, retrieval: dict | None = None,
                         progress=None) -> tuple[KnowledgeBase, dict[int, str]]:
    """One Document with one Chunk per passage (title kept as the document title), embedded with
    `embedding_model` (or the given vectors, same order as the corpus), then BM25-indexed.
    Returns the KB and {document id: corpus id}."""
    from knowledge.search.embedding_cache import embed_cached
    from knowledge.search.services import postings_index_documents

    if vectors is None:
        vectors = embed_cached(embedding_model, [p.full_text for p in dataset.corpus], kind="documents")
    dim = int(vectors.shape[1])
    with tenant_scope(tenant):
        kb = KnowledgeBase.objects.create(
            tenant=tenant, name=f"{dataset.name}"[:120], language=language, embedding_model=embedding_model,
            embedding_dim=dim, retrieval=retrieval or {},
        )
        mapping: dict[int, str] = {}
        batch = 500
        for start in range(0, len(dataset.corpus), batch):
            passages = dataset.corpus[start:start + batch]
            with transaction.atomic():
                docs = Document.objects.bulk_create([
                    Document(tenant=tenant, kb=kb, title=(p.title or p.id)[:300], filename=f"{p.id}.txt"[:300],
                             content_type="text/plain", size=len(p.text.encode()),
                             sha256=hashlib.sha256(f"{p.id}\n{p.text}".encode()).hexdigest(),
                             status=Document.Status.READY, chunks_total=1, chunks_embedded=1)
                    for p in passages
                ])
                Chunk.objects.bulk_create([
                    Chunk(tenant=tenant, kb=kb, document=doc, ordinal=0, text=p.text, char_start=0,
                          char_end=len(p.text), embedding=vectors[start + i], embedding_dim=dim)
                    for i, (doc, p) in enumerate(zip(docs, passages, strict=True))
                ])
                for doc, p in zip(docs, passages, strict=True):
                    mapping[doc.pk] = p.id
            postings_index_documents(tenant=tenant, kb=kb, document_ids=[d.pk for d in docs])
            if progress:
                progress(min(start + batch, len(dataset.corpus)), len(dataset.corpus))
    return kb, mapping


def prime_query_vectors(model: str, texts: list[str], vectors: np.ndarray) -> None:
    """Put precomputed (disk-cached) query vectors into the search's per-process query cache."""
    from knowledge.search import dense

    with dense._cache_lock:
        for text, vector in zip(texts, vectors, strict=True):
            dense._QUERY_CACHE[(model, text.strip())] = np.asarray(vector, dtype=np.float32)
        while len(dense._QUERY_CACHE) > max(dense._QUERY_CACHE_SIZE, len(texts)):
            dense._QUERY_CACHE.popitem(last=False)


def evaluate_dataset_modes(*, tenant: Tenant, kb: KnowledgeBase, dataset: Dataset, mapping: dict[int, str],
                           modes: list[str], k: int = 10, options: dict | None = None) -> dict[str, dict]:
    """{mode: {"ndcg@10", "recall@10", "mrr@10", "queries", "ms_per_query"}} over the judged queries."""
    queries = dataset.judged_queries
    out = {}
    for mode in modes:
        started = time.perf_counter()
        totals = {"ndcg": 0.0, "recall": 0.0, "rr": 0.0}
        for qid, text in queries.items():
            ranked_docs = document_ranking(tenant=tenant, kb_ids=[kb.pk], query=text, depth=k,
                                           options={**(options or {}), "mode": mode})
            ranked = [mapping[d] for d in ranked_docs if d in mapping]
            scores = score_ranking(ranked, dataset.qrels[qid], k)
            for key in totals:
                totals[key] += scores[key]
        n = max(1, len(queries))
        out[mode] = {"ndcg@10": totals["ndcg"] / n, f"recall@{k}": totals["recall"] / n, "mrr@10": totals["rr"] / n,
                     "queries": len(queries), "ms_per_query": (time.perf_counter() - started) * 1000 / n}
    return out
