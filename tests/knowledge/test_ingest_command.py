import pytest
from django.core.management import CommandError, call_command

from accounts.tenancy import tenant_scope
from knowledge.demo import SAMPLE_KB_NAME, sample_files, sample_kb_ensure
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.services import document_process
from tests.knowledge.files import make_docx, make_pdf


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "readme.md").write_text("# 안내\n\n폴더 가져오기 테스트입니다.", encoding="utf-8")
    (tmp_path / "sub" / "legacy.txt").write_bytes("옛날 인코딩 문서입니다.".encode("cp949"))
    (tmp_path / "sub" / "deeper" / "guide.pdf").write_bytes(make_pdf([["PDF inside a folder"]]))
    (tmp_path / "sub" / "policy.docx").write_bytes(make_docx([("p", "Word inside a folder")]))
    (tmp_path / "sub" / "image.png").write_bytes(b"\x89PNG")  # unsupported: skipped
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.txt").write_text("hidden, skipped")
    (tmp_path / "empty.txt").write_bytes(b"")  # rejected with a reason
    return tmp_path


def test_ingest_folder_recursively_inline(folder, tenant_a, capsys):
    call_command("ingest", str(folder), tenant=tenant_a.tenant.slug, kb="Docs", create=True, inline=True)
    out = capsys.readouterr().out
    assert "Indexed 4 documents" in out
    assert "1 skipped (unsupported type)" in out
    assert "rejected:" in out and "empty.txt" in out
    with tenant_scope(tenant_a.tenant):
        kb = KnowledgeBase.objects.get(name="Docs")
        docs = Document.objects.filter(kb=kb)
        assert sorted(d.filename for d in docs) == ["guide.pdf", "legacy.txt", "policy.docx", "readme.md"]
        assert all(d.status == "ready" for d in docs)
    # Running it again adds nothing: every file is a duplicate.
    call_command("ingest", str(folder), tenant=tenant_a.tenant.slug, kb="Docs", inline=True)
    assert "4 already present" in capsys.readouterr().out
    with tenant_scope(tenant_a.tenant):
        assert Document.objects.filter(kb=kb).count() == 4


def test_ingest_queues_without_waiting(folder, tenant_a, capsys):
    call_command("ingest", str(folder / "readme.md"), tenant=tenant_a.tenant.slug, kb="Q", create=True,
                 no_wait=True)
    assert "Queued 1 documents" in capsys.readouterr().out
    with tenant_scope(tenant_a.tenant):
        assert Document.objects.get(filename="readme.md").status == "queued"


def test_ingest_errors(folder, tenant_a):
    with pytest.raises(CommandError, match="No tenant"):
        call_command("ingest", str(folder), tenant="nope", kb="Docs")
    with pytest.raises(CommandError, match="--create"):
        call_command("ingest", str(folder), tenant=tenant_a.tenant.slug, kb="Missing")
    with pytest.raises(CommandError, match="no such file"):
        call_command("ingest", str(folder / "nothing"), tenant=tenant_a.tenant.slug, kb="Docs", create=True)


def test_demo_sample_kb_is_bilingual_multi_format_and_idempotent(tenant_a):
    kb, added = sample_kb_ensure(tenant=tenant_a.tenant, owner=tenant_a.owner)
    assert kb.name == SAMPLE_KB_NAME and added == len(sample_files())
    assert {p.suffix for p in sample_files()} >= {".md", ".html", ".csv", ".txt", ".pdf", ".docx"}
    _kb, added_again = sample_kb_ensure(tenant=tenant_a.tenant, owner=tenant_a.owner)
    assert added_again == 0
    with tenant_scope(tenant_a.tenant):
        documents = list(Document.objects.filter(kb=kb))
    assert len(documents) == len(sample_files())
    for document in documents:
        assert document_process(tenant=tenant_a.tenant, document_id=document.pk).status == "ready", document.filename
    with tenant_scope(tenant_a.tenant):
        texts = " ".join(Chunk.objects.filter(kb=kb).values_list("text", flat=True))
    assert "지식 베이스" in texts and "knowledge base" in texts


def test_seed_demo_signal_creates_the_sample_kb(db, capsys):
    call_command("seed_demo")
    call_command("seed_demo")  # idempotent
    from accounts.models import Tenant

    tenant = Tenant.objects.get(slug="demo")
    with tenant_scope(tenant):
        kb = KnowledgeBase.objects.get(name=SAMPLE_KB_NAME)
        assert Document.objects.filter(kb=kb).count() == len(sample_files())
