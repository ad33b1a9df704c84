import re

from knowledge import chunking
from knowledge.chunking import chunk_document, embedding_input
from knowledge.parsers import parse
from llm.tokens import count_tokens
from tests.knowledge.files import make_pdf

SENTENCE_KO = "사용자는 지식 베이스에 문서를 올리고 어시스턴트에게 질문합니다."
SENTENCE_EN = "Users upload documents into a knowledge base and ask the assistant questions."


def _check_spans(parsed, chunks, size=900):
    for chunk in chunks:
        assert 0 < len(chunk.text) <= size
        assert parsed.text[chunk.char_start:chunk.char_end] == chunk.text
        assert chunk.text == chunk.text.strip()
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def _word_boundaries_respected(parsed, chunks):
    """Every chunk starts and ends at a word boundary: never inside a Korean (or English) word."""
    text = parsed.text
    for chunk in chunks:
        assert chunk.char_start == 0 or text[chunk.char_start - 1].isspace()
        assert chunk.char_end == len(text) or text[chunk.char_end].isspace()


def test_short_document_is_one_chunk():
    parsed = parse("text", b"just a short note")
    chunks = chunk_document(parsed)
    assert [c.text for c in chunks] == ["just a short note"]


def test_korean_text_is_never_cut_mid_word():
    text = " ".join([SENTENCE_KO] * 120)  # one long paragraph, no newlines
    parsed = parse("text", text.encode())
    chunks = chunk_document(parsed)
    assert len(chunks) > 3
    _check_spans(parsed, chunks)
    _word_boundaries_respected(parsed, chunks)


def test_korean_without_sentence_punctuation_still_splits_at_spaces():
    text = " ".join(["한국어단어"] * 600)
    parsed = parse("text", text.encode())
    chunks = chunk_document(parsed)
    _check_spans(parsed, chunks)
    _word_boundaries_respected(parsed, chunks)


def test_overlap_repeats_the_end_of_the_previous_chunk():
    text = " ".join([SENTENCE_EN] * 60)
    parsed = parse("text", text.encode())
    chunks = chunk_document(parsed, size=900, overlap=120)
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        overlap = previous.char_end - chunk.char_start
        assert 0 < overlap <= 120
        # The overlap begins at a sentence start.
        assert chunk.text.startswith("Users upload")


def test_no_overlap_when_disabled():
    parsed = parse("text", " ".join([SENTENCE_EN] * 60).encode())
    chunks = chunk_document(parsed, size=900, overlap=0)
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.char_start >= previous.char_end


def test_markdown_prefers_heading_boundaries_and_keeps_heading_path():
    sections = []
    for i in range(1, 5):
        body = "\n\n".join([" ".join([SENTENCE_KO] * 8)] * 3)
        sections.append(f"## 섹션 {i}\n\n{body}")
    text = "# 제품 안내\n\n소개 문단입니다.\n\n" + "\n\n".join(sections)
    parsed = parse("markdown", text.encode())
    chunks = chunk_document(parsed)
    _check_spans(parsed, chunks)
    # A section never shares a chunk with the end of the previous one.
    for chunk in chunks:
        assert len(re.findall(r"^## ", chunk.text, re.M)) <= 1
        if "## " in chunk.text:
            assert chunk.text.startswith("#")
    paths = [c.heading_path for c in chunks]
    assert paths[0].startswith("제품 안내")
    assert "제품 안내 > 섹션 4" in paths
    for chunk in chunks:
        if chunk.text.startswith("## 섹션"):
            title = chunk.text.splitlines()[0][3:]
            assert chunk.heading_path.endswith(title)
    # Continuation chunks get their section path in the embedded text for context.
    continuation = next(c for c in chunks if not c.text.startswith("#"))
    assert continuation.embed_text.startswith(continuation.heading_path + "\n")


def test_paragraphs_preferred_over_lines():
    para = " ".join([SENTENCE_EN] * 5)  # ~400 chars
    text = "\n\n".join([para] * 6)
    parsed = parse("text", text.encode())
    chunks = chunk_document(parsed, overlap=0)
    for chunk in chunks:
        assert chunk.text.endswith("questions.")
        assert chunk.text.startswith("Users")


def test_pdf_chunks_carry_their_page():
    lines = [SENTENCE_EN] * 12
    parsed = parse("pdf", make_pdf([lines, lines, lines]))
    chunks = chunk_document(parsed)
    pages = [c.page for c in chunks]
    assert pages[0] == 1 and pages[-1] == 3
    assert pages == sorted(pages)
    for chunk in chunks:
        assert parsed.page_at(chunk.char_start) in (chunk.page, chunk.page - 1)


def test_csv_chunks_repeat_header_and_name_rows():
    rows = "\n".join(f"{i},상품 {i},{SENTENCE_KO}" for i in range(1, 101))
    parsed = parse("csv", f"id,name,note\n{rows}\n".encode())
    chunks = chunk_document(parsed)
    assert len(chunks) > 3
    covered = []
    for chunk in chunks:
        assert chunk.text.splitlines()[0] == "id | name | note"
        assert len(chunk.text) <= 900
        first, _, last = chunk.heading_path.removeprefix("rows ").partition("-")
        covered.extend(range(int(first), int(last or first) + 1))
    assert covered == list(range(1, 101))  # every row exactly once, in order


def test_csv_row_longer_than_a_chunk_is_split_with_header():
    long_cell = " ".join([SENTENCE_EN] * 40)
    parsed = parse("csv", f"id,text\n1,\"{long_cell}\"\n2,short\n".encode())
    chunks = chunk_document(parsed)
    assert len(chunks) >= 4
    assert all(c.text.startswith("id | text\n") for c in chunks)
    assert all(len(c.text) <= 900 for c in chunks)


def test_token_counts_come_from_the_one_token_counter():
    """Chunks are counted by llm.tokens.count_tokens, like every other count in the product."""
    assert not hasattr(chunking, "estimate_tokens")
    for kind, text in (("text", " ".join([SENTENCE_EN] * 40)), ("markdown", f"# 안내\n\n{' '.join([SENTENCE_KO] * 40)}"),
                       ("csv", "id,note\n" + "\n".join(f"{i},{SENTENCE_KO}" for i in range(60)))):
        chunks = chunk_document(parse(kind, text.encode()))
        assert len(chunks) > 1
        for chunk in chunks:
            assert chunk.token_count == count_tokens(chunk.text) > 0


def test_embedding_input_prefix_rules():
    assert embedding_input("body", "A > B", "markdown") == "A > B\nbody"
    assert embedding_input("## B\nbody", "A > B", "markdown") == "## B\nbody"
    assert embedding_input("body", "rows 1-3", "table") == "body"


def test_hard_split_of_a_run_without_spaces():
    parsed = parse("text", ("x" * 2000).encode())
    chunks = chunk_document(parsed, size=900, overlap=120)
    assert "".join(c.text for c in chunks) == "x" * 2000
    assert all(len(c.text) <= 900 for c in chunks)
