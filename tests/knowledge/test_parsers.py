"""Each parser on real small files generated here, and each kind of bad input."""

import codecs
import os

import pytest

from knowledge.parsers import FORMATS, ParseError, UnsupportedFile, format_for, parse, sniff
from knowledge.parsers.text import decode_text
from tests.knowledge.files import encrypt_pdf, make_docx, make_pdf, make_zip_bomb_docx

KOREAN = "검색 증강 생성은 사내 문서에서 답을 찾아 출처와 함께 보여 줍니다. 한글 인코딩도 문제없습니다."


# ---------------------------------------------------------------- text encodings


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "cp949", "euc-kr"])
def test_korean_text_in_every_supported_encoding(encoding):
    text = f"# 안내\n\n{KOREAN}\nEnglish words mixed in: RAG, PDF, API.\n"
    parsed = parse("text", text.encode(encoding))
    assert KOREAN in parsed.text
    assert "English words mixed in" in parsed.text


def test_utf16_with_bom_and_cp949_short_text():
    assert decode_text(codecs.BOM_UTF16_LE + "한글".encode("utf-16-le")).text == "한글"
    assert decode_text("가나다 테스트".encode("cp949")).text == "가나다 테스트"


def test_latin1_text_is_not_mistaken_for_korean():
    text = "Résumé of the café meeting: naïve façade, très bien. " * 5
    assert decode_text(text.encode("cp1252")).text.startswith("Résumé")


def test_crlf_normalised():
    assert parse("text", b"line one\r\nline two\r\n").text == "line one\nline two\n"


@pytest.mark.parametrize("data", [b"", b"   \n\t\n"])
def test_empty_text_fails_clearly(data):
    with pytest.raises(ParseError) as exc:
        parse("text", data)
    assert "empty" in exc.value.message or "no text" in exc.value.message


def test_binary_garbage_named_txt_fails_clearly():
    garbage = os.urandom(4096)
    with pytest.raises(ParseError) as exc:
        parse("text", garbage)
    assert "binary" in exc.value.message


def test_markdown_title_and_front_matter():
    parsed = parse("markdown", "---\nlayout: doc\n---\n# 제품 안내\n\n본문입니다.\n".encode())
    assert parsed.kind == "markdown"
    assert parsed.title == "제품 안내"
    assert "layout" not in parsed.text


# ---------------------------------------------------------------- PDF


def test_pdf_text_layer_with_page_numbers():
    data = make_pdf([["Alpha page one", "more text"], ["Bravo page two"], ["Charlie page three"]],
                    title="Handbook")
    parsed = parse("pdf", data)
    assert parsed.page_count == 3
    assert parsed.title == "Handbook"
    for page, word in ((1, "Alpha"), (2, "Bravo"), (3, "Charlie")):
        assert parsed.page_at(parsed.text.index(word)) == page


def test_pdf_without_text_layer_says_ocr_not_supported():
    with pytest.raises(ParseError) as exc:
        parse("pdf", make_pdf([[], []]))
    assert exc.value.message == "The PDF has no extractable text; OCR not supported."


def test_encrypted_pdf_is_refused_with_reason():
    with pytest.raises(ParseError) as exc:
        parse("pdf", encrypt_pdf(make_pdf([["secret text"]])))
    assert "password" in exc.value.message


def test_pdf_encrypted_with_empty_user_password_is_read():
    parsed = parse("pdf", encrypt_pdf(make_pdf([["open text"]]), password=""))
    assert "open text" in parsed.text


@pytest.mark.parametrize("data", [
    b"%PDF-1.4\nthis is not really a pdf at all",
    make_pdf([["cut short"]])[:120],
    b"\x00\x01\x02 not a pdf",
])
def test_corrupt_pdf_fails_clearly(data):
    with pytest.raises(ParseError) as exc:
        parse("pdf", data)
    assert exc.value.message in ("The PDF is damaged and could not be read.",
                                 "The PDF has no extractable text; OCR not supported.")


# ---------------------------------------------------------------- CSV


def test_csv_rows_keep_their_header():
    rows = "\n".join(f"{i},제품 {i},설명 {'가' * 40}" for i in range(1, 61))
    parsed = parse("csv", f"id,name,description\n{rows}\n".encode("cp949"))
    assert parsed.kind == "table"
    assert len(parsed.rows) == 60
    assert parsed.text.splitlines()[0] == "id | name | description"


def test_csv_header_only_and_malformed():
    with pytest.raises(ParseError):
        parse("csv", b"a,b,c\n")


def test_csv_semicolon_dialect():
    parsed = parse("csv", b"name;city\nKim;Seoul\nLee;Busan\n")
    assert parsed.text.splitlines() == ["name | city", "Kim | Seoul", "Lee | Busan"]


# ---------------------------------------------------------------- DOCX


def test_docx_headings_paragraphs_lists_tables():
    data = make_docx([
        ("h1", "보안 안내"), ("p", "첫 문단입니다."), ("h2", "Keys"), ("li", "rotate keys"),
        ("table", "Policy|Models;Local|local only"),
    ], title="Security")
    parsed = parse("docx", data)
    assert parsed.kind == "markdown"
    assert parsed.title == "Security"
    assert "# 보안 안내" in parsed.text
    assert "## Keys" in parsed.text
    assert "- rotate keys" in parsed.text
    assert "Local | local only" in parsed.text


def test_zip_bomb_docx_refused_without_inflating():
    with pytest.raises(ParseError) as exc:
        parse("docx", make_zip_bomb_docx())
    assert "zip bomb" in exc.value.message


@pytest.mark.parametrize("data", [b"PK\x03\x04 broken zip", b"not a zip at all"])
def test_corrupt_docx(data):
    with pytest.raises(ParseError) as exc:
        parse("docx", data)
    assert "not a valid Word document" in exc.value.message


def test_docx_without_text():
    with pytest.raises(ParseError):
        parse("docx", make_docx([]))


# ---------------------------------------------------------------- HTML


def test_html_main_text_without_scripts_styles_or_navigation():
    html = """<!doctype html><html><head><title>FAQ 페이지</title><style>.x{color:red}</style>
    <script>var secret = "do-not-index";</script></head><body><nav>Home | Pricing</nav>
    <h1>자주 묻는 질문</h1><p>첫 번째 <b>답변</b>입니다.</p><ul><li>하나</li><li>둘</li></ul>
    <table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>
    <footer>copyright</footer><noscript>enable js</noscript></body></html>"""
    parsed = parse("html", html.encode())
    assert parsed.title == "FAQ 페이지"
    assert "# 자주 묻는 질문" in parsed.text
    assert "첫 번째 답변입니다." in parsed.text
    assert "- 하나" in parsed.text
    assert "1 | 2" in parsed.text
    for absent in ("do-not-index", "color", "Pricing", "copyright", "enable js"):
        assert absent not in parsed.text


def test_html_prefers_main_element():
    html = b"<html><body><div>sidebar junk</div><main><p>the real content</p></main></body></html>"
    assert parse("html", html).text == "the real content"


def test_html_meta_charset_euc_kr():
    html = '<html><head><meta charset="euc-kr"></head><body><p>한글 페이지</p></body></html>'.encode("cp949")
    assert "한글 페이지" in parse("html", html).text


def test_deeply_nested_html_does_not_crash():
    html = ("<div>" * 5000) + "deep text" + ("</div>" * 5000)
    assert "deep text" in parse("html", html.encode()).text


def test_empty_html():
    with pytest.raises(ParseError):
        parse("html", b"<html><body><script>x()</script></body></html>")


# ---------------------------------------------------------------- upload checks


@pytest.mark.parametrize("name", ["slides.pptx", "report.hwp", "archive.zip", "noextension", "image.png"])
def test_unknown_types_rejected_with_supported_list(name):
    with pytest.raises(UnsupportedFile) as exc:
        format_for(name)
    assert ".pdf" in str(exc.value) and ".docx" in str(exc.value)


def test_every_format_has_a_parser():
    sample = {"text": b"hello", "markdown": b"# hi\n\ntext", "csv": b"a,b\n1,2\n",
              "html": b"<p>hi</p>", "pdf": make_pdf([["hi"]]), "docx": make_docx([("p", "hi")])}
    for fmt in FORMATS.values():
        assert parse(fmt, sample[fmt.key]).text.strip()


@pytest.mark.parametrize("name,head", [
    ("a.pdf", b"hello, not a pdf"),
    ("a.docx", b"%PDF-1.4"),
    ("a.txt", os.urandom(2048) + b"\x00"),
    ("a.txt", b""),
])
def test_sniff_rejects_mismatched_content(name, head):
    with pytest.raises(UnsupportedFile):
        sniff(format_for(name), head)


def test_sniff_accepts_utf16_and_korean_text():
    sniff(format_for("a.txt"), "한국어 텍스트".encode("utf-16"))
    sniff(format_for("a.txt"), "한국어 텍스트".encode("cp949"))
    sniff(format_for("a.md"), "# 제목\n본문".encode())
