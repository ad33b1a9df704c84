"""Chunk limits per document and per team (knowledge.limits, billing.Plan): refused early with a message that
names the limit and the plan, checked exactly before embedding, never two documents past the team total at
once, and never at the cost of other documents' data. Limits are scaled down to a few chunks."""

import threading

import pytest
from django.db import connection

from accounts.tenancy import tenant_scope
from billing.services import subscription_set
from knowledge import chunking, limits, pipeline, services
from knowledge.embeddings import get_embedder
from knowledge.models import Chunk, Document
from knowledge.parsers import parse
from tests.factories.billing import PlanFactory
from tests.factories.knowledge import make_document, make_kb

CHUNK = 200
SENTENCE = "사내 문서 검색은 질문에 맞는 단락을 찾아 출처와 함께 보여 줍니다 and cites the passages it used for each answer"


def paragraphs(n: int, tag: str = "") -> str:
    """`n` paragraphs of ~120 characters: one chunk each at a chunk size of 200 without overlap."""
    return "\n\n".join(f"{tag}Section {i}. {SENTENCE}, item {i * 7919 % 1000}." for i in range(n))


def chunk_count(text: str) -> int:
    return len(chunking.chunk_document(parse("text", text.encode()), size=CHUNK, overlap=0))


def on_plan(tenant, **fields):
    plan = PlanFactory(name="Starter", **fields)
    subscription_set(tenant=tenant, plan=plan)
    return plan


def kb_for(tenant, name="Limits"):
    return make_kb(tenant, name=name, chunk_size=CHUNK, chunk_overlap=0)


def process(tenant, document):
    return services.document_process(tenant=tenant, document_id=document.pk)


def chunks_of(tenant, document) -> int:
    with tenant_scope(tenant):
        return Chunk.objects.filter(document_id=document.pk).count()


@pytest.fixture
def work(monkeypatch):
    """Counts of chunking and embedding calls: a refused document must not have cost either."""
    calls = {"chunk": 0, "embed": 0}
    real_chunk = chunking.chunk_document
    embedder_cls = type(get_embedder("use-multilingual"))
    real_embed = embedder_cls.embed_documents

    def chunk(*args, **kwargs):
        calls["chunk"] += 1
        return real_chunk(*args, **kwargs)

    def embed(self, texts, **kwargs):
        calls["embed"] += 1
        return real_embed(self, texts, **kwargs)

    monkeypatch.setattr(chunking, "chunk_document", chunk)
    monkeypatch.setattr(embedder_cls, "embed_documents", embed)
    return calls


LONG_HEADER = ",".join(f"column_with_a_long_name_{i}" for i in range(12))
SHAPES = {
    "paragraphs": ("text", paragraphs(40)),
    "blank lines": ("text", "start\n" + "\n" * 50_000 + " \t " * 1_000 + "end"),
    "one word": ("text", "a" * 5_000),
    "markdown": ("markdown", "\n\n".join(f"# Part {i}\n\n## Sub\n\n{SENTENCE}" for i in range(30))),
    "table, long header": ("csv", LONG_HEADER + "\n" + "\n".join(f"{i},x" for i in range(300))),
    "table, long row": ("csv", "a,b\n" + ",".join(str(i) for i in range(3_000))),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_early_estimate_never_exceeds_the_real_count(shape):
    kind, text = SHAPES[shape]
    parsed = parse(kind, text.encode())
    for size in (200, 900):
        real = len(chunking.chunk_document(parsed, size=size, overlap=size // 8))
        assert limits.minimum_chunks(parsed, size) <= real


def test_a_document_far_over_the_plans_limit_is_refused_before_chunking(tenant_a, work, api_a, client_a):
    on_plan(tenant_a.tenant, max_chunks_per_document=5)
    kb = kb_for(tenant_a.tenant)
    text = paragraphs(40)
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb, name="big.txt", data=text))
    least = limits.minimum_chunks(parse("text", text.encode()), CHUNK)
    assert document.status == Document.Status.FAILED
    assert f"at least {least} chunks" in document.error
    assert "more than the 5 per document that the Starter plan allows" in document.error
    assert work == {"chunk": 0, "embed": 0} and chunks_of(tenant_a.tenant, document) == 0
    detail = api_a.get(f"/api/v1/documents/{document.pk}").json()
    assert detail["status"] == "failed" and "Starter plan" in detail["error"]
    page = client_a.get(f"/knowledge/{kb.pk}/").content.decode()
    assert "5 per document that the Starter plan allows" in page


def test_the_exact_count_is_checked_after_chunking_before_embedding(tenant_a, work):
    on_plan(tenant_a.tenant, max_chunks_per_document=5)
    text = paragraphs(8)
    exact = chunk_count(text)
    assert limits.minimum_chunks(parse("text", text.encode()), CHUNK) <= 5 < exact  # the early estimate lets it through
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb_for(tenant_a.tenant), data=text))
    assert document.status == Document.Status.FAILED
    assert f"would make {exact} chunks, more than the 5 per document" in document.error
    assert work["embed"] == 0 and chunks_of(tenant_a.tenant, document) == 0


def test_a_team_over_its_allowance_gets_the_plans_limit_and_keeps_its_documents(tenant_a, tenant_b):
    plan = on_plan(tenant_a.tenant, max_chunks_per_tenant=12)
    kb = kb_for(tenant_a.tenant)
    first = process(tenant_a.tenant, make_document(tenant_a.tenant, kb, name="one.txt", data=paragraphs(8, "A")))
    assert first.status == Document.Status.READY and first.chunks_total == 8
    second = process(tenant_a.tenant, make_document(tenant_a.tenant, kb, name="two.txt", data=paragraphs(16, "B")))
    assert second.status == Document.Status.FAILED
    least = limits.minimum_chunks(parse("text", paragraphs(16, "B").encode()), CHUNK)
    assert 8 + least > 12  # refused on the estimate, before chunking
    assert f"would add at least {least} chunks to the 8 your team already has" in second.error
    assert "more than the 12 chunks in total that the Starter plan allows" in second.error
    assert chunks_of(tenant_a.tenant, first) == 8 and chunks_of(tenant_a.tenant, second) == 0
    # Another team is not affected by A's allowance.
    other = process(tenant_b.tenant, make_document(tenant_b.tenant, kb_for(tenant_b.tenant), data=paragraphs(8, "B")))
    assert other.status == Document.Status.READY
    # A larger plan, and the failed document goes through on retry.
    plan.max_chunks_per_tenant = 30
    plan.save()
    services.document_retry(tenant=tenant_a.tenant, document=second)
    assert process(tenant_a.tenant, second).status == Document.Status.READY
    assert chunks_of(tenant_a.tenant, first) + chunks_of(tenant_a.tenant, second) == 8 + 16


def test_reindexing_a_document_does_not_count_its_own_chunks_twice(tenant_a):
    on_plan(tenant_a.tenant, max_chunks_per_tenant=10)
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb_for(tenant_a.tenant), data=paragraphs(8)))
    assert document.status == Document.Status.READY
    services.document_reindex(tenant=tenant_a.tenant, document=document)
    again = process(tenant_a.tenant, document)
    assert again.status == Document.Status.READY, again.error
    assert chunks_of(tenant_a.tenant, document) == 8


def test_the_installations_ceiling_applies_below_a_plan_without_limits(tenant_a, settings):
    settings.INGEST_MAX_CHUNKS_PER_DOCUMENT = 3
    on_plan(tenant_a.tenant)  # no limits of its own
    document = process(tenant_a.tenant, make_document(tenant_a.tenant, kb_for(tenant_a.tenant), data=paragraphs(8)))
    assert document.status == Document.Status.FAILED
    assert "more than the 3 per document that this installation allows" in document.error


def test_the_lower_of_plan_and_ceiling_wins_and_says_whose_it_is(tenant_a, settings):
    settings.INGEST_MAX_CHUNKS_PER_DOCUMENT = 1000
    settings.INGEST_MAX_CHUNKS_PER_TENANT = 0
    plan = on_plan(tenant_a.tenant, max_chunks_per_document=50, max_chunks_per_tenant=5000)
    got = limits.chunk_limits(tenant=tenant_a.tenant)
    assert (got.per_document, got.document_from_plan, got.per_tenant, got.tenant_from_plan) == (50, True, 5000, True)
    plan.max_chunks_per_document = 5000
    plan.save()
    got = limits.chunk_limits(tenant=tenant_a.tenant)
    assert (got.per_document, got.document_from_plan, got.plan_name) == (1000, False, "Starter")


@pytest.mark.django_db(transaction=True)
def test_two_documents_at_once_cannot_both_take_the_last_of_the_allowance(tenant_a, monkeypatch):
    on_plan(tenant_a.tenant, max_chunks_per_tenant=12)
    kb = kb_for(tenant_a.tenant)
    documents = [make_document(tenant_a.tenant, kb, name=f"{tag}.txt", data=paragraphs(8, tag)) for tag in "XY"]
    both_chunked = threading.Barrier(2, timeout=30)
    real_chunk = chunking.chunk_document

    def chunk_then_meet(*args, **kwargs):
        drafts = real_chunk(*args, **kwargs)
        both_chunked.wait()  # both runs passed the early estimate and reach the reservation together
        return drafts

    monkeypatch.setattr(chunking, "chunk_document", chunk_then_meet)
    outcomes = {}

    def run(document):
        try:
            outcomes[document.pk] = pipeline.run_document(document_id=document.pk, force=True)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(d,)) for d in documents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes.values()) == ["failed", "ready"]
    with tenant_scope(tenant_a.tenant):
        states = {d.status: d for d in Document.objects.filter(pk__in=[d.pk for d in documents])}
        assert Chunk.objects.filter(tenant=tenant_a.tenant).count() == 8
    # Both passed the early estimate (0 + 5 <= 12); the exact count under the tenant's lock refused one.
    assert "would add 8 chunks to the 8 your team already has" in states["failed"].error
