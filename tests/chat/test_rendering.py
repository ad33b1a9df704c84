"""Answer Markdown is rendered safely: sanitised HTML, code blocks, citation chips only for real citations."""

from chat.rendering import render_answer, sanitize_markdown

CITES = [{"n": 1}, {"n": 2}]


def test_scripts_handlers_and_javascript_links_are_removed():
    html = sanitize_markdown(
        '<script>alert(1)</script> <img src=x onerror=alert(1)> [click](javascript:alert(1)) '
        '<a href="https://example.com" onclick="x()">ok</a>'
    )
    assert "<script" not in html and "<img" not in html and "<a href=\"https://example.com\" onclick" not in html
    assert 'href="javascript:' not in html
    assert "&lt;script&gt;" in html  # raw HTML is shown as text, never executed


def test_markdown_features_and_code_blocks_render():
    html = sanitize_markdown("# Title\n\n**bold** and `code`\n\n```python\nprint('<b>')\n```\n\n- a\n- b")
    assert "<h1>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<pre><code" in html and "&lt;b&gt;" in html and "<li>a</li>" in html


def test_links_get_safe_rel_and_only_safe_schemes():
    html = sanitize_markdown("[site](https://example.com) [x](data:text/html,hi)")
    assert 'href="https://example.com"' in html and "noopener" in html
    assert "href=\"data:" not in html


def test_citation_chips_only_for_cited_numbers_and_not_in_code():
    html = render_answer("Refunds take 30 days [1]. See [2][9]. `arr[1]`\n\n```\nx[2]\n```", message_id=5,
                         citations=CITES)
    assert html.count('class="cite-chip"') == 2
    assert 'aria-controls="src-5-1"' in html and 'aria-controls="src-5-2"' in html
    assert "[9]" in html  # not a citation: left as text
    assert "arr[1]" in html and "x[2]" in html


def test_answer_without_citations_renders_plain_markdown():
    assert "cite-chip" not in render_answer("Nothing cited [1].", message_id=1, citations=[])


def test_step_labels_for_the_pending_bubble():
    from django.utils import translation

    from chat.rendering import step_label

    assert step_label({"step": "searching"}) == "Searching…"
    assert step_label({"step": "sources", "count": 1}) == "1 source found"
    assert step_label({"step": "sources", "count": 5}) == "5 sources found"
    assert step_label({"step": "sources", "count": 0}) == "No relevant sources found"
    assert step_label({"step": "writing", "mode": "extractive"}) == "Quoting the documents…"
    assert step_label({"step": "writing", "mode": "generative"}) == "Writing…"
    assert step_label({"step": "reranking"}) == ""  # an unknown step shows nothing rather than a wrong word
    with translation.override("ko"):
        assert step_label({"step": "sources", "count": 5}) == "출처 5개를 찾았습니다"
        assert step_label({"step": "writing", "mode": "extractive"}) == "문서에서 인용하는 중…"
