"""Reading text files as they come: damaged text is read with a warning, binary data is refused, mojibake and
mixed encodings are repaired, legacy Korean encodings are read, and no U+FFFD mark reaches the index."""

import os
import random

import ftfy.bad_codecs  # noqa: F401  (registers "sloppy-windows-1252": cp1252 that keeps its 5 unused bytes)
import pytest

from accounts.tenancy import tenant_scope
from knowledge import services
from knowledge.models import Chunk, Document
from knowledge.parsers import ParsedDocument, ParseError, UnsupportedFile, format_for, parse, sniff
from knowledge.parsers.base import REPAIRED, UNDECODABLE
from tests.factories.knowledge import make_document, make_kb

KOREAN = "검색 증강 생성은 사내 문서에서 답을 찾아 출처와 함께 보여 줍니다. 가격표의 입력과 출력 단가를 확인하세요."
ENGLISH = "The café’s “naïve” résumé — déjà vu, 50 € per month."
NOT_TEXT = "The file does not contain readable text (it looks like binary data)."


def damaged_lecture(share: float = 0.038, seed: int = 7) -> tuple[str, int]:
    """A Korean markdown lecture in which `share` of the characters are U+FFFD (damaged upstream); and how many."""
    lines = ["# 강의 노트", "", "## 가격", "", "| 모델 | 입력 | 출력 |", "| --- | --- | --- |", "| A | 0.15 | 0.60 |", ""]
    lines += [KOREAN] * 40
    chars = list("\n".join(lines) + "\n")
    rng = random.Random(seed)
    body = [i for i, ch in enumerate(chars) if i > 60 and not ch.isspace()]
    damaged = rng.sample(body, int(share * len(chars)))
    for i in damaged:
        chars[i] = "\ufffd"
    return "".join(chars), len(damaged)


def warnings_of(parsed) -> dict:
    return {w["code"]: w["count"] for w in parsed.warnings}


# ---------------------------------------------------------------- damaged text is read, with a count


def test_utf8_markdown_with_replacement_marks_is_read_with_a_warning():
    text, damaged = damaged_lecture()
    parsed = parse("markdown", text.encode())
    assert warnings_of(parsed) == {UNDECODABLE: damaged}
    assert "\ufffd" not in parsed.text and parsed.title == "강의 노트"
    assert parsed.text.count("찾아") > 30  # the text is there


def test_undecodable_bytes_in_utf8_become_a_count_not_a_refusal():
    data = bytearray(("# 안내\n\n" + (KOREAN + "\n") * 20).encode())
    positions = random.Random(3).sample(range(20, len(data)), 25)
    for i in positions:
        data[i] = 0xFF  # never valid in UTF-8
    parsed = parse("markdown", bytes(data))
    assert "\ufffd" not in parsed.text
    assert 1 <= warnings_of(parsed)[UNDECODABLE] <= 25
    assert "출처와 함께" in parsed.text


def test_damaged_text_passes_the_upload_sniff():
    text, _damaged = damaged_lecture()
    sniff(format_for("lecture.md"), text.encode()[:65536])
    data = bytearray(text.encode())
    data[100] = 0xFF
    sniff(format_for("lecture.md"), bytes(data[:65536]))


def test_text_that_is_mostly_undecodable_is_refused():
    with pytest.raises(ParseError) as exc:
        parse("text", ("\ufffd" * 200 + " 안녕").encode())
    assert "could not be decoded" in exc.value.message


def test_csv_offsets_survive_the_marks_being_dropped():
    parsed = parse("csv", "이름,설명\n가\ufffd나,첫\ufffd째 행\n다라,둘째 행\n".encode())
    assert warnings_of(parsed) == {UNDECODABLE: 2}
    assert parsed.text[parsed.header[0]:parsed.header[1]] == "이름 | 설명"
    assert [parsed.text[r.start:r.end] for r in parsed.rows] == ["가나 | 첫째 행", "다라 | 둘째 행"]


def test_page_offsets_survive_the_marks_being_dropped():
    parsed = ParsedDocument(text="one\ufffd\ufffd\n\ntwo\ufffd\n\nthree", page_count=3, page_starts=[7, 13])
    parsed.drop_replacement_marks()
    assert parsed.text == "one\n\ntwo\n\nthree" and warnings_of(parsed) == {UNDECODABLE: 3}
    assert [parsed.page_at(parsed.text.index(word)) for word in ("one", "two", "three")] == [1, 2, 3]


# ---------------------------------------------------------------- binary is refused


@pytest.mark.parametrize("data", [
    pytest.param(b"\x00\x01header\x00\x00\x00" * 300, id="nul-heavy"),
    pytest.param(os.urandom(4096), id="random-bytes"),
    pytest.param(bytes(b for b in os.urandom(12000) if b)[:4096], id="random-bytes-without-nul"),
    pytest.param(random.Random(5).randbytes(8192).translate(bytes(range(128, 256)) * 2)[:4096],
                 id="undecodable-runs"),
    pytest.param(b"plain words " * 6000 + bytes(range(256)) * 64, id="text-then-binary"),
])
def test_binary_data_is_refused(data):
    with pytest.raises(ParseError) as exc:
        parse("text", data)
    assert exc.value.message == NOT_TEXT


def test_binary_data_is_refused_at_upload():
    with pytest.raises(UnsupportedFile):
        sniff(format_for("a.txt"), b"\x00\x01header\x00\x00\x00" * 300)


def test_a_stray_nul_does_not_make_text_binary():
    parsed = parse("text", "첫 줄\x00 둘째 줄 텍스트입니다.\n".encode())
    assert parsed.text == "첫 줄 둘째 줄 텍스트입니다.\n"


# ---------------------------------------------------------------- mojibake and mixed encodings are repaired


@pytest.mark.parametrize("wrong", ["sloppy-windows-1252", "latin-1"])
@pytest.mark.parametrize("original", [KOREAN, ENGLISH], ids=["korean", "english"])
def test_utf8_read_as_cp1252_or_latin1_is_repaired(original, wrong):
    mojibake = original.encode().decode(wrong)
    assert mojibake != original
    parsed = parse("text", f"{mojibake}\n{mojibake}\n".encode())
    assert parsed.text == f"{original}\n{original}\n"
    assert warnings_of(parsed) == {REPAIRED: 2}


@pytest.mark.parametrize("clean", [
    KOREAN,
    "# 설정\n```python\nprint('안녕')  # 주석\n```\n| 모델 | 입력 | 출력 |\n| --- | --- | --- |\n| A | 0.1 | 0.2 |",
    ENGLISH,
    "SÃO PAULO É A MAIOR CIDADE; A MAÇÃ E A IRMÃ ESTÃO AQUI. Größe, Maße, Œuvre, Ærøskøbing, ¿Qué? ¡Olé!",
    "10 °C ± 2 µm, © 2024 ®, «citation», Ø 5 mm",
], ids=["korean", "korean-code-and-table", "english", "portuguese-caps", "symbols"])
def test_clean_text_is_left_untouched(clean):
    parsed = parse("text", clean.encode())
    assert parsed.text == clean and parsed.warnings == []


def test_mixed_utf8_and_cp949_lines():
    data = ("첫 줄은 UTF-8 입니다.\n".encode() + "둘째 줄은 CP949 인코딩입니다.\n".encode("cp949")
            + "셋째 줄 다시 UTF-8, 가격표 포함.\n".encode() + "넷째 줄: 똠방각하 햏 (CP949 확장 한글).\n".encode("cp949"))
    parsed = parse("text", data)
    assert parsed.text == ("첫 줄은 UTF-8 입니다.\n둘째 줄은 CP949 인코딩입니다.\n셋째 줄 다시 UTF-8, 가격표 포함.\n"
                           "넷째 줄: 똠방각하 햏 (CP949 확장 한글).\n")
    assert parsed.warnings == []


def test_mixed_utf8_and_cp1252_lines():
    data = (KOREAN + "\n").encode() + "Résumé of the café: naïve façade, très “bien”.\n".encode("cp1252")
    parsed = parse("text", data)
    assert parsed.text == KOREAN + "\nRésumé of the café: naïve façade, très “bien”.\n"
    assert parsed.warnings == []


@pytest.mark.parametrize("encoding", ["cp949", "euc-kr"])
def test_legacy_korean_files(encoding):
    text = "# 안내\n\n" + KOREAN + "\n"
    assert parse("markdown", text.encode(encoding)).text == text


def test_cp949_extended_syllables_and_a_cp1252_file():
    assert parse("text", "똠방각하 햏 뷁: 확장 한글도 읽습니다.".encode("cp949")).text == "똠방각하 햏 뷁: 확장 한글도 읽습니다."
    western = "Résumé of the café meeting: naïve façade, très bien. " * 5
    assert parse("text", western.encode("cp1252")).text == western  # cp1252, not its look-alike cp1250


# ---------------------------------------------------------------- the document, its chunks and its pages


@pytest.fixture
def damaged_document(tenant_a):
    kb = make_kb(tenant_a.tenant, name="Lectures")
    text, damaged = damaged_lecture()
    document = make_document(tenant_a.tenant, kb, name="lecture.md", data=text.encode())
    document = services.document_process(tenant=tenant_a.tenant, document_id=document.pk)
    return document, damaged


@pytest.mark.django_db
def test_damaged_document_is_indexed_without_replacement_marks(tenant_a, damaged_document):
    document, damaged = damaged_document
    assert document.status == Document.Status.READY, document.error
    assert document.warnings == [{"code": UNDECODABLE, "count": damaged}]
    with tenant_scope(tenant_a.tenant):
        chunks = list(Chunk.objects.filter(document=document).values_list("text", flat=True))
    assert chunks and not any("\ufffd" in text for text in chunks)


@pytest.mark.django_db
def test_the_warning_shows_on_the_document_page_list_and_api(client_a, api_a, damaged_document):
    document, damaged = damaged_document
    message = f"{damaged} characters could not be decoded and were left out."
    assert message in client_a.get(f"/knowledge/documents/{document.pk}/").content.decode()
    assert message in client_a.get(f"/knowledge/{document.kb_id}/").content.decode()
    payload = api_a.get(f"/api/v1/documents/{document.pk}").json()
    assert payload["warnings"] == [{"code": UNDECODABLE, "count": damaged, "message": message}]
    listed = api_a.get(f"/api/v1/knowledge-bases/{document.kb_id}/documents").json()["results"]
    assert listed[0]["warnings"][0]["count"] == damaged


@pytest.mark.django_db
def test_the_warning_in_korean(client_a, damaged_document):
    document, damaged = damaged_document
    client_a.post("/i18n/setlang/", {"language": "ko", "next": "/"})
    body = client_a.get(f"/knowledge/documents/{document.pk}/").content.decode()
    assert f"{damaged}자" in body and "could not be decoded" not in body
