"""Degenerate input (knowledge.degenerate): refused with a reason before any chunk is embedded, while ordinary
Korean text (long lines, some words run together), code and large tables go through. Files are built here, at
a small scale: INGEST_DEGENERATE_MIN_CHUNKS and the chunk size are lowered instead of writing megabytes."""

import random
from pathlib import Path

import pytest

from accounts.tenancy import tenant_scope
from knowledge import degenerate, services
from knowledge.embeddings import get_embedder
from knowledge.models import Chunk, Document
from knowledge.parsers import parse
from tests.factories.knowledge import make_document, make_kb

CHUNK = 200
PARTICLES = ["은", "는", "이", "가", "을", "를", "에서", "으로", "의", "와", "도"]


def korean_prose(rng: random.Random, sentences: int) -> str:
    """Korean-like prose on one long line, some words written together as people do."""
    out = []
    for _ in range(sentences):
        words = ["".join(chr(0xAC00 + rng.randrange(11172)) for _ in range(rng.randint(1, 4))) + rng.choice(PARTICLES)
                 for _ in range(rng.randint(4, 12))]
        out.append("".join(w + ("" if rng.random() < 0.3 else " ") for w in words).strip() + rng.choice([".", "?"]))
    return " ".join(out)


def numbers_table(rng: random.Random, rows: int) -> str:
    """A wide numeric table with few distinct values (like pixel data or survey scores)."""
    header = ",".join(["id"] + [f"p{i}" for i in range(24)])
    lines = [",".join([str(r)] + [str(rng.randint(0, 16)) for _ in range(24)]) for r in range(rows)]
    return header + "\n" + "\n".join(lines) + "\n"


def one_giant_row(rng: random.Random, cells: int) -> str:
    return "a,b\n" + ",".join(str(rng.randint(0, 10**6)) for _ in range(cells)) + "\n"


def why(kind: str, text: str, chunk_size: int = CHUNK) -> str | None:
    return degenerate.reason(parse(kind, text.encode()), chunk_size=chunk_size)


@pytest.fixture
def small_gate(settings):
    settings.INGEST_DEGENERATE_MIN_CHUNKS = 5


def test_a_single_word_has_no_word_breaks(small_gate):
    assert "no word breaks" in why("text", "a" * 20_000)
    rng = random.Random(1)
    assert "no word breaks" in why("text", "".join(rng.choice("abcdefghij") for _ in range(20_000)))


def test_repetition_is_refused_with_its_ratio(small_gate):
    reason = why("text", "The same sentence again and again. " * 2_000)
    assert "almost entirely repetition" in reason and "chunks" in reason
    table = "id,name,value\n" + "1,x,0\n" * 5_000
    assert "repetition" in why("csv", table)


def test_a_table_row_of_a_whole_file_is_not_a_record(small_gate):
    reason = why("csv", one_giant_row(random.Random(2), 3_000))
    assert reason and "rows of up to" in reason and "delimiter and line breaks" in reason


def test_ordinary_text_code_and_tables_pass(small_gate):
    rng = random.Random(3)
    assert why("text", korean_prose(rng, 300)) is None  # one line of ~11,000 characters
    assert why("markdown", "# 안내\n\n" + "\n\n".join(korean_prose(rng, 5) for _ in range(60))) is None
    source = Path(degenerate.__file__).with_name("chunking").joinpath("markdown.py").read_text()
    assert why("text", source) is None
    assert why("csv", numbers_table(rng, 2_000)) is None
    # Long cells are fine while rows stay records.
    long_cells = "title,body\n" + "\n".join(f"t{i},{korean_prose(rng, 8)}" for i in range(200))
    assert why("csv", long_cells) is None


def test_small_files_are_never_refused_as_degenerate(settings):
    settings.INGEST_DEGENERATE_MIN_CHUNKS = 100
    assert why("text", "a" * 10_000) is None  # 50 chunks at most: not worth refusing


def test_windows_cover_a_large_text_evenly():
    text = "".join(chr(ord("a") + i % 26) for i in range(10_000_000))
    parts = degenerate.windows(text)
    assert len(parts) == degenerate.WINDOWS and all(len(p) == degenerate.WINDOW for p in parts)
    assert parts[0] == text[:degenerate.WINDOW] and parts[-1] == text[-degenerate.WINDOW:]


# ---------------------------------------------------------------- through the pipeline


@pytest.fixture
def kb(tenant_a):
    return make_kb(tenant_a.tenant, name="Odd files", chunk_size=CHUNK, chunk_overlap=20)


@pytest.fixture
def embed_calls(monkeypatch):
    embedder_cls = type(get_embedder("use-multilingual"))
    original = embedder_cls.embed_documents
    calls = []

    def counting(self, texts, **kwargs):
        calls.append(len(texts))
        return original(self, texts, **kwargs)

    monkeypatch.setattr(embedder_cls, "embed_documents", counting)
    return calls


@pytest.mark.parametrize("name, data, expected", [
    ("word.txt", "x" * 40_000, "no word breaks"),
    ("same.md", "# Title\n\n" + "Lorem ipsum dolor sit amet. " * 2_000, "repetition"),
    ("row.csv", one_giant_row(random.Random(4), 3_000), "rows of up to"),
])
def test_degenerate_upload_fails_with_its_reason_before_embedding(tenant_a, kb, small_gate, embed_calls, api_a,
                                                                  client_a, name, data, expected):
    keep = make_document(tenant_a.tenant, kb, name="keep.txt", data=korean_prose(random.Random(9), 40))
    services.document_process(tenant=tenant_a.tenant, document_id=keep.pk)
    embedded_before = sum(embed_calls)
    document = make_document(tenant_a.tenant, kb, name=name, data=data)
    done = services.document_process(tenant=tenant_a.tenant, document_id=document.pk)
    assert done.status == Document.Status.FAILED and expected in done.error
    assert sum(embed_calls) == embedded_before  # refused before any embedding
    with tenant_scope(tenant_a.tenant):
        assert not Chunk.objects.filter(document=document).exists()
        kept = Document.objects.get(pk=keep.pk)
        assert kept.status == Document.Status.READY
        assert Chunk.objects.filter(document=keep).count() == kept.chunks_total > 0  # others keep their data
    detail = api_a.get(f"/api/v1/documents/{document.pk}").json()
    assert detail["status"] == "failed" and expected in detail["error"]
    page = client_a.get(f"/knowledge/documents/{document.pk}/").content.decode()
    assert expected in page


def test_korean_on_one_long_line_is_indexed(tenant_a, kb, small_gate):
    text = korean_prose(random.Random(6), 200)
    document = make_document(tenant_a.tenant, kb, name="긴줄.txt", data=text)
    done = services.document_process(tenant=tenant_a.tenant, document_id=document.pk)
    assert done.status == Document.Status.READY, done.error
    assert done.chunks_total >= len(text) // CHUNK
