"""Markdown chunks follow the document's structure: code, tables and lists are units, headings are only real
headings, and a table split over chunks repeats its header row (markdown, HTML and Word alike)."""

import io

import pytest

from knowledge.chunking import chunk_document
from knowledge.parsers import parse
from tests.knowledge.files import make_docx

SENTENCE_EN = "Users upload documents into a knowledge base and ask the assistant questions."
SENTENCE_KO = "사용자는 지식 베이스에 문서를 올리고 어시스턴트에게 질문합니다."


def _prose(sentences: int, sentence: str = SENTENCE_EN) -> str:
    return " ".join([sentence] * sentences)


def _chunks(kind: str, text: str, **kwargs):
    parsed = parse(kind, text.encode() if isinstance(text, str) else text)
    return parsed, chunk_document(parsed, **kwargs)


def _assert_verbatim(parsed, chunks, size=900):
    for chunk in chunks:
        assert 0 < len(chunk.text) <= size
        assert chunk.text == chunk.text.strip()
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def _price_rows(count: int) -> list[str]:
    return [f"| gpt-{i} | ${i}.50 | ${i * 2}.00 | per million tokens, billed monthly |" for i in range(count)]


# ------------------------------------------------------------------ headings


def test_comment_lines_in_code_blocks_are_not_headings():
    code = "\n".join(["# install the dependencies", "import os", "## build step", *[f"x{i} = {i}" for i in range(80)]])
    text = (f"# Lecture\n\n{_prose(3)}\n\n## Setup\n\n{_prose(4)}\n\n```python\n{code}\n```\n\n{_prose(6)}\n\n"
            f"~~~\n# tilde fence comment\n~~~\n\n{_prose(8)}\n\n## Usage\n\n{_prose(12)}\n")
    parsed, chunks = _chunks("markdown", text)
    assert len(chunks) > 3
    paths = [c.heading_path for c in chunks]
    assert all(p in ("Lecture", "Lecture > Setup", "Lecture > Usage") for p in paths), paths
    for chunk in chunks:
        if "x79 = 79" in chunk.text or "tilde fence comment" in chunk.text:
            assert chunk.heading_path == "Lecture > Setup"
    after_code = [c for c in chunks if c.char_start > text.index("x79 = 79") and c.char_end < text.index("## Usage")]
    assert after_code and all(c.heading_path == "Lecture > Setup" for c in after_code)
    assert chunks[-1].heading_path == "Lecture > Usage"


def test_html_preformatted_code_is_a_fenced_block_with_its_indentation_and_no_headings():
    code = "\n".join(["# install the dependencies", "def build():", "    return 1", "## build step",
                      *[f"x{i} = {i}" for i in range(60)]])
    page = (f"<html><body><h1>Lecture</h1><h2>Setup</h2><p>{_prose(3)}</p>"
            f"<pre><code class=\"language-python\">{code}</code></pre><p>{_prose(6)}</p>"
            f"<h2>Usage</h2><p>{_prose(12)}</p></body></html>")
    parsed, chunks = _chunks("html", page)
    assert "```python\n# install the dependencies\ndef build():\n    return 1\n" in parsed.text
    assert {c.heading_path for c in chunks} <= {"Lecture", "Lecture > Setup", "Lecture > Usage"}
    assert [c.heading_path for c in chunks if "x59 = 59" in c.text] == ["Lecture > Setup"]


def test_heading_paths_follow_the_nesting_of_real_headings():
    text = "\n\n".join([
        "# 제품 안내", _prose(10, SENTENCE_KO),
        "## 설치", _prose(10, SENTENCE_KO),
        "### 리눅스", _prose(10, SENTENCE_KO),
        "> # quoted, not a heading of this document\n> " + _prose(2),
        _prose(10, SENTENCE_KO),
        "Pricing\n-------", _prose(10),  # a setext heading is a heading
        "# Appendix", _prose(10),
    ])
    parsed, chunks = _chunks("markdown", text)
    _assert_verbatim(parsed, chunks)
    by_text = {}
    for chunk in chunks:
        for marker in ("## 설치", "### 리눅스", "quoted, not a heading", "Pricing\n---", "# Appendix"):
            if marker in chunk.text:
                by_text[marker] = chunk.heading_path
    assert by_text["## 설치"] == "제품 안내 > 설치"
    assert by_text["### 리눅스"] == "제품 안내 > 설치 > 리눅스"
    assert by_text["quoted, not a heading"] == "제품 안내 > 설치 > 리눅스"
    assert by_text["Pricing\n---"] == "제품 안내 > Pricing"
    assert by_text["# Appendix"] == "Appendix"
    assert not any("quoted" in c.heading_path for c in chunks)


def test_a_chunk_holding_several_small_sections_is_filed_under_their_common_parent():
    sections = "\n\n".join(f"### Question {i}\n\nShort answer {i}." for i in range(4))
    text = f"# FAQ\n\n{_prose(14)}\n\n## Billing\n\n{sections}\n\n## Security\n\n{_prose(14)}\n"
    parsed, chunks = _chunks("markdown", text)
    holding = [c for c in chunks if "### Question 0" in c.text]
    assert len(holding) == 1 and "### Question 3" in holding[0].text
    assert holding[0].heading_path == "FAQ > Billing"


def test_a_chunk_opening_with_headings_is_filed_under_the_innermost():
    text = f"# Guide\n\n## Keys\n\n{_prose(7)}\n\n## Audit\n\n{_prose(6)}\n"
    parsed, chunks = _chunks("markdown", text)
    assert [c.heading_path for c in chunks] == ["Guide > Keys", "Guide > Audit"]
    assert chunks[0].text.startswith("# Guide\n\n## Keys\n\n")


# ------------------------------------------------------------------ code, lists


def test_a_code_block_that_fits_a_chunk_is_never_split():
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(22))  # ~850 characters
    block = f"```python\n{code}\n```"
    assert 780 < len(block) <= 900  # beyond the overlap budget, within the chunk size
    text = f"# Code\n\n{_prose(9)}\n\n{block}\n\n{_prose(9)}\n"
    parsed, chunks = _chunks("markdown", text, size=900, overlap=120)
    assert sum(block in c.text for c in chunks) == 1
    for chunk in chunks:
        assert ("```python" in chunk.text) == ("value_21" in chunk.text)


def test_an_oversize_code_block_is_split_between_lines_with_its_fences_repeated():
    lines = [f"result_{i} = transform(data_{i}, option={i})" for i in range(120)]
    text = "# Script\n\n```python\n" + "\n".join(lines) + "\n```\n\nAfter the code.\n"
    parsed, chunks = _chunks("markdown", text, size=600, overlap=80)
    code_chunks = [c for c in chunks if "result_" in c.text]
    assert len(code_chunks) > 3
    seen = []
    for chunk in code_chunks:
        assert len(chunk.text) <= 600
        body = chunk.text.split("```python\n", 1)[1]
        assert body.endswith("\n```")
        seen += body.removesuffix("\n```").split("\n")
        assert chunk.heading_path == "Script"
    assert seen == lines  # every line whole, once, in order
    assert code_chunks[0].text.startswith("# Script\n\n```python\n")


def test_a_list_stays_together_and_a_long_list_splits_only_between_items():
    short = "\n".join(f"- step {i}: {_prose(1)}" for i in range(10))
    assert 780 < len(short) <= 900  # beyond the overlap budget, within the chunk size
    items = [f"- item {i}: {_prose(1)}\n  continued on a second line of item {i}." for i in range(30)]
    text = f"# Steps\n\n{_prose(8)}\n\n{short}\n\n{_prose(8)}\n\n## All\n\n" + "\n".join(items) + "\n"
    parsed, chunks = _chunks("markdown", text)
    _assert_verbatim(parsed, chunks)
    assert sum(short in c.text for c in chunks) == 1
    found = []
    for chunk in chunks:
        for item in items:
            if item.split("\n")[0] in chunk.text:
                assert item in chunk.text  # never an item cut in two
                found.append(item)
    assert found == items  # each item in exactly one chunk (no overlap into the list), in order


# ------------------------------------------------------------------ tables


def _assert_table_chunks(chunks, header_lines: list[str], rows: list[str]):
    """Every chunk holding a row holds the header row and separator right above its rows; rows whole, once."""
    with_rows = [c for c in chunks if any(r in c.text for r in rows)]
    assert len(with_rows) > 2
    seen = []
    for chunk in with_rows:
        lines = chunk.text.split("\n")
        at = lines.index(header_lines[0])
        assert lines[at:at + len(header_lines)] == header_lines
        seen += [line for line in lines[at + len(header_lines):] if line in rows]
        assert len(chunk.text) <= 900
    assert seen == rows


def test_markdown_table_split_over_chunks_repeats_its_header_row():
    header = ["| Model | Input | Output | Note |", "|---|---|---|---|"]
    rows = _price_rows(60)
    text = f"# Pricing\n\n{_prose(3)}\n\n## Models\n\n" + "\n".join(header + rows) + f"\n\n{_prose(3)}\n"
    parsed, chunks = _chunks("markdown", text)
    _assert_table_chunks(chunks, header, rows)
    for chunk in chunks:
        if any(r in chunk.text for r in rows):
            assert chunk.heading_path == "Pricing > Models"
            assert chunk.embed_text.startswith("Pricing > Models\n") or chunk.text.startswith("## Models")


def test_html_table_split_over_chunks_repeats_its_header_row():
    body = "".join(f"<tr><td>gpt-{i}</td><td>${i}.50</td><td>${i * 2}.00</td><td>per million tokens, billed monthly"
                   f"</td></tr>" for i in range(60))
    html = (f"<html><body><h1>Pricing</h1><p>{_prose(2)}</p><table><thead><tr><th>Model</th><th>Input</th>"
            f"<th>Output</th><th>Note</th></tr></thead><tbody>{body}</tbody></table></body></html>")
    parsed, chunks = _chunks("html", html)
    header = ["| Model | Input | Output | Note |", "| --- | --- | --- | --- |"]
    _assert_table_chunks(chunks, header, _price_rows(60))


def test_word_table_split_over_chunks_repeats_its_header_row():
    pytest.importorskip("docx")
    table = ";".join(["Model|Input|Output|Note"]
                     + [f"gpt-{i}|${i}.50|${i * 2}.00|per million tokens, billed monthly" for i in range(60)])
    parsed, chunks = _chunks("docx", make_docx([("h1", "Pricing"), ("p", _prose(2)), ("table", table)]))
    header = ["| Model | Input | Output | Note |", "| --- | --- | --- | --- |"]
    _assert_table_chunks(chunks, header, _price_rows(60))
    assert all(c.heading_path == "Pricing" for c in chunks)


def test_pipes_inside_html_and_word_cells_do_not_split_the_cell():
    docx = pytest.importorskip("docx")
    html = "<table><tr><th>a</th><th>b</th></tr><tr><td>x | y</td><td>z</td></tr></table>"
    assert "| x \\| y | z |" in parse("html", html.encode()).text
    document = docx.Document()
    table = document.add_table(rows=2, cols=2)
    for (row, col), value in {(0, 0): "a", (0, 1): "b", (1, 0): "x | y", (1, 1): "z"}.items():
        table.cell(row, col).text = value
    out = io.BytesIO()
    document.save(out)
    assert parse("docx", out.getvalue()).text.split("\n") == ["| a | b |", "| --- | --- |", "| x \\| y | z |"]


def test_html_table_columns_line_up_under_the_header():
    html = ("<table><tr><th colspan=2>Price</th><th>Note</th></tr>"
            "<tr><td>local only</td><td>local only</td><td>free</td></tr></table>")
    assert parse("html", html.encode()).text.split("\n") == [
        "| Price |  | Note |", "| --- | --- | --- |", "| local only | local only | free |"]


def test_word_table_columns_line_up_under_the_header():
    """A merged cell is written once; equal values in separate cells stay in their own columns."""
    docx = pytest.importorskip("docx")
    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).merge(table.cell(0, 1)).text = "Price"
    table.cell(0, 2).text = "Note"
    for col, value in enumerate(["local only", "local only", "free"]):
        table.cell(1, col).text = value
    out = io.BytesIO()
    document.save(out)
    assert parse("docx", out.getvalue()).text.split("\n") == [
        "| Price |  | Note |", "| --- | --- | --- |", "| local only | local only | free |"]


def test_a_layout_table_is_read_as_text_with_its_headings():
    html = ("<html><body><table><tr><td><h2>Menu</h2><p>First column text.</p></td>"
            "<td><table><tr><td>nested</td></tr></table></td></tr></table></body></html>")
    lines = parse("html", html.encode()).text.split("\n")
    assert "## Menu" in lines and "First column text." in lines
    assert lines[-2:] == ["| nested |", "| --- |"]  # the table of data inside it is a table


def test_a_table_chunk_holds_whole_rows_under_its_header():
    rows = _price_rows(40)
    text = "\n".join(["| Model | Input | Output | Note |", "|---|---|---|---|", *rows])
    parsed, chunks = _chunks("markdown", text, size=400, overlap=50)
    seen = []
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert lines[:2] == ["| Model | Input | Output | Note |", "|---|---|---|---|"]
        assert all(line in rows for line in lines[2:])
        seen += lines[2:]
    assert seen == rows
