"""A worker's long run hands its slot to another tenant's waiting document between two batches, then resumes
with the chunks it already has (knowledge.pipeline, INGEST_YIELD_AFTER_SECONDS)."""

import time

import pytest

from accounts.tenancy import tenant_scope
from knowledge import pipeline
from knowledge.embeddings import get_embedder
from knowledge.models import Chunk, Document
from tests.factories.knowledge import make_document, make_kb

SENTENCE = "사내 문서 검색은 질문에 맞는 단락을 찾아 출처와 함께 보여 줍니다. Retrieval finds passages for questions."


def long_text(paragraphs=10):
    return "\n\n".join(f"Section {i}. " + " ".join([SENTENCE] * 5) for i in range(paragraphs))


@pytest.fixture
def embedded(monkeypatch):
    """How many texts were embedded: a resumed run embeds only the chunks still missing."""
    embedder_cls = type(get_embedder("use-multilingual"))
    original = embedder_cls.embed_documents
    count = {"texts": 0}

    def counting(self, texts, **kwargs):
        count["texts"] += len(texts)
        time.sleep(0.5)  # a batch well over what resuming costs, so a slice may end after one batch
        return original(self, texts, **kwargs)

    monkeypatch.setattr(embedder_cls, "embed_documents", counting)
    return count


@pytest.fixture
def slices(settings):
    settings.INGEST_YIELD_AFTER_SECONDS = 0  # a slice of one batch
    settings.INGEST_EMBED_BATCH = 4


def _state(tenant, document):
    with tenant_scope(tenant):
        document.refresh_from_db()
        return document, Chunk.objects.filter(document=document).count()


def test_a_long_run_yields_to_another_tenant_then_resumes_exactly(tenant_a, tenant_b, slices, embedded):
    big = make_document(tenant_a.tenant, make_kb(tenant_a.tenant, name="Big"), name="big.txt", data=long_text())
    small = make_document(tenant_b.tenant, make_kb(tenant_b.tenant, name="Small"), name="small.txt")

    assert pipeline.run_document(document_id=big.pk, force=True, may_yield=True) == "yielded"
    big, stored = _state(tenant_a.tenant, big)
    assert big.status == Document.Status.QUEUED and big.claim_token == "" and big.dispatched_at is None
    assert big.attempts == 0 and big.error == ""  # handing over is not a failed attempt
    assert stored == 4 and big.chunks_total > 4

    assert pipeline.run_document(document_id=small.pk, may_yield=True) == "ready"
    embedded["texts"] = 0
    # Nobody else waits now: the run goes to the end.
    assert pipeline.run_document(document_id=big.pk, may_yield=True) == "ready"
    big, stored = _state(tenant_a.tenant, big)
    assert big.status == Document.Status.READY and big.attempts == 1
    with tenant_scope(tenant_a.tenant):
        ordinals = list(Chunk.objects.filter(document=big).order_by("ordinal").values_list("ordinal", flat=True))
    assert ordinals == list(range(big.chunks_total))
    assert embedded["texts"] == big.chunks_total - 4  # only what was missing


def test_no_yield_for_the_tenants_own_queue_or_an_inline_run(tenant_a, tenant_b, slices):
    kb = make_kb(tenant_a.tenant, name="Own")
    big = make_document(tenant_a.tenant, kb, name="big.txt", data=long_text())
    make_document(tenant_a.tenant, kb, name="next.txt")  # the same tenant's next file waits its turn
    assert pipeline.run_document(document_id=big.pk, force=True, may_yield=True) == "ready"

    other = make_document(tenant_a.tenant, kb, name="other.txt", data=long_text(12))
    make_document(tenant_b.tenant, make_kb(tenant_b.tenant, name="B"), name="b.txt")
    # An inline run (manage.py ingest --inline, evaluation loaders) has no worker slot to hand over.
    assert pipeline.run_document(document_id=other.pk, force=True) == "ready"
