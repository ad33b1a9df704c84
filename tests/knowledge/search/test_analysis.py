"""The script-aware analyser: Latin words glued to Korean particles, and what stays as it was."""

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.tenancy import tenant_scope
from knowledge.search.analysis import BIGRAM_PREFIX, Analyzer, analyzer_for
from knowledge.search.models import IndexStats
from knowledge.search.selectors import search
from knowledge.search.services import index_rebuild_stale
from tests.factories.search import make_indexed_document, make_search_kb


@pytest.fixture
def analyzer() -> Analyzer:
    return analyzer_for()


@pytest.mark.parametrize("glued, english", [
    ("BST란", "BST"),
    ("HIV가", "HIV"),
    ("API를", "API"),
    ("Python으로", "Python"),
    ("Servers에서", "servers"),  # stemmed as English text would be
])
def test_a_latin_word_glued_to_a_korean_particle_gives_its_english_term(analyzer, glued, english):
    (term,) = analyzer.tokens(english)
    assert term in analyzer.tokens(glued)


def test_the_hangul_part_is_analysed_as_before(analyzer):
    # Kiwi still reads the whole text (its content morphemes), bigrams still cover every Hangul run.
    assert analyzer.tokens("BST란 무엇인가") == ["bst", "무엇", *(BIGRAM_PREFIX + g for g in ["란", "무엇", "엇인", "인가"])]


def test_digits_glued_to_korean_units_are_terms(analyzer):
    tokens = analyzer.tokens("2023년 3분기 매출")
    assert "2023" in tokens and "3" in tokens and "매출" in tokens


def test_words_of_one_script_are_unchanged(analyzer):
    assert analyzer.tokens("What is the BST in Python?") == ["what", "bst", "python"]
    korean = analyzer.tokens("환불 기간은 얼마인가요")
    assert korean and all(not t.isascii() for t in korean)


def test_the_signature_names_the_analysis_version(analyzer):
    assert analyzer.signature.startswith("v2:")  # indexes written with v1 glued Latin words to Hangul


def test_a_korean_question_finds_an_english_passage_by_its_acronym(tenant_a):
    kb = make_search_kb(tenant_a.tenant, language="en")
    wanted = make_indexed_document(tenant_a.tenant, kb, ["A BST keeps its keys in sorted order."], title="Trees")
    make_indexed_document(tenant_a.tenant, kb, ["Hash tables spread keys over buckets."], title="Hashing")
    result = search(tenant=tenant_a.tenant, kb_ids=[kb.pk], query="BST란 무엇인가?", k=3, options={"mode": "bm25"})
    assert [h.document_id for h in result.hits] == [wanted.pk]


def _korean_kb_with_an_old_index(tenant):
    """A KB whose index says an older analyser wrote it, with a passage whose acronym v1 could not index."""
    kb = make_search_kb(tenant, language="ko")
    doc = make_indexed_document(tenant, kb, ["BST란 정렬된 이진 트리입니다."], title="자료구조")
    with tenant_scope(tenant):
        IndexStats.objects.filter(kb=kb).update(analyzer="v1:ssmb")
    return kb, doc


def test_indexing_into_an_old_index_leaves_it_marked_stale(tenant_a):
    kb, _doc = _korean_kb_with_an_old_index(tenant_a.tenant)
    make_indexed_document(tenant_a.tenant, kb, ["새 문서"])
    assert index_rebuild_stale(dry_run=True) == [(tenant_a.tenant.pk, kb.pk)]


def test_rebuild_search_indexes_rebuilds_only_stale_indexes(tenant_a):
    kb, doc = _korean_kb_with_an_old_index(tenant_a.tenant)
    current = make_search_kb(tenant_a.tenant, language="en")
    make_indexed_document(tenant_a.tenant, current, ["A current index."])
    out = StringIO()
    call_command("rebuild_search_indexes", stdout=out)
    assert f"KB {kb.pk}: rebuilt" in out.getvalue() and f"KB {current.pk}:" not in out.getvalue()
    with tenant_scope(tenant_a.tenant):
        assert IndexStats.objects.get(kb=kb).analyzer == analyzer_for("ko").signature
    assert index_rebuild_stale(dry_run=True) == []
