"""Answer-quality evaluation: the metric functions on hand-made inputs, and `evaluate_answers` end to end on a
tiny BEIR-style folder (English and Korean) through real ingestion, real hybrid search and the answer pipeline."""

import json

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Tenant
from accounts.tenancy import system_scope
from chat.answer_eval import (
    AnswerOutcome,
    _cited_corpus_ids,
    added_ms,
    citation_precision,
    contains_gold,
    load_answers,
    normalize_answer,
    percentile,
    summarize,
)
from knowledge.search.beir import DatasetError

# ---------------------------------------------------------------- metrics


def test_normalisation_is_nfkc_lowercase_and_drops_every_whitespace():
    assert normalize_answer("  February 7,\n2016 ") == "february7,2016"
    assert normalize_answer("１９４４ 년") == "1944년"  # full-width digits (NFKC)
    assert normalize_answer("5\u3000㎞") == "5km"  # ideographic space, compatibility unit sign
    assert normalize_answer("ＣＡＭ\tＮewton") == "camnewton"
    assert normalize_answer("") == ""


def test_contains_gold_after_normalisation():
    answer = "The game was played on **February 7, 2016** at Levi's Stadium [1]."
    assert contains_gold(answer=answer, golds=["february 7,2016"])
    assert contains_gold(answer="지명수배된 사람은 임 종석 입니다 [1].", golds=["임종석"])
    assert contains_gold(answer="It took １９４４ years.", golds=["nope", "1944"])  # any gold counts
    assert not contains_gold(answer=answer, golds=["February 8, 2016"])
    assert not contains_gold(answer=answer, golds=["", "   "])  # an empty gold never matches everything
    assert not contains_gold(answer="", golds=["Denver"])


def outcome(qid="q", *, cited=(), relevant=("d1",), answer="", status="done", ms=None, golds=("x",)):
    return AnswerOutcome(query_id=qid, question="?", golds=list(golds), relevant=list(relevant), answer=answer,
                         status=status, cited=list(cited), added_ms=ms)


def test_citation_precision_is_pooled_over_all_cited_chunks():
    outcomes = [
        outcome("a", cited=["d1", "d2"], relevant=["d1"]),  # one relevant, one from a non-relevant passage
        outcome("b", cited=["d7"], relevant=["d7", "d8"]),
        outcome("c", cited=[], relevant=["d1"]),  # cites nothing: adds no cited chunk
        outcome("d", cited=[""], relevant=["d1"]),  # a chunk whose passage is unknown is not relevant
    ]
    assert citation_precision(outcomes) == pytest.approx(2 / 4)
    # Pooled, not averaged per answer (that would give (1/1 + 1/3) / 2).
    assert citation_precision([outcome(cited=["d1"]), outcome(cited=["d2", "d3", "d1"])]) == pytest.approx(2 / 4)
    assert citation_precision([outcome(cited=[]), outcome(cited=[])]) is None


def test_summary_counts_failures_as_misses_and_leaves_their_time_out():
    outcomes = [
        outcome("a", answer="It is Denver [1].", golds=["denver"], cited=["d1"], ms=10.0),
        outcome("b", answer="Nothing relevant.", golds=["Paris"], cited=[], ms=30.0),
        outcome("c", answer="x" * 1000, golds=["x"], cited=["d9"], ms=20.0),
        outcome("d", answer="", golds=["y"], status="failed", ms=5000.0),
    ]
    summary = summarize(outcomes)
    assert summary == {
        "answer_contains_gold": 0.5,  # a and c of four
        "citation_precision": 0.5,  # d1 relevant, d9 not
        "answer_chars_p50": 17,  # of the three answered: 17, 17, 1000
        "added_ms_p95": pytest.approx(29.0),  # 10, 20, 30 -> 20 + 0.9 * 10; the failed 5000 is left out
        "cited_share": 0.5,
        "queries": 4,
        "failed": 1,
    }
    assert summarize([])["answer_contains_gold"] == 0.0


def test_added_time_prefers_the_pipelines_answer_ms():
    assert added_ms({"answer_ms": 12.5, "total_ms": 900, "retrieval_ms": 100}) == 12.5
    assert added_ms({"total_ms": 500.0, "retrieval_ms": 120.0, "condense_ms": 80.0}) == 300.0
    assert added_ms({"total_ms": 100.0, "retrieval_ms": 100.5}) == 0.0
    assert added_ms({"retrieval_ms": 3}) is None


def test_percentile_interpolates():
    assert percentile([], 50) is None
    assert percentile([4], 95) == 4
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(range(1, 101), 95) == pytest.approx(95.05)


def test_cited_chunks_map_to_corpus_ids_once_each():
    citations = [{"n": 1, "chunk_id": 10, "document_id": 1}, {"n": 2, "chunk_id": 11, "document_id": 2},
                 {"n": 3, "chunk_id": 10, "document_id": 1}, {"n": 4, "chunk_id": 12, "document_id": 99}]
    assert _cited_corpus_ids(citations, {1: "p1", 2: "p2"}) == ["p1", "p2", ""]


def test_load_answers(tmp_path):
    with pytest.raises(DatasetError):
        load_answers(tmp_path)
    (tmp_path / "answers.jsonl").write_text('{"query_id": 1, "answers": ["a", " "]}\n\n'
                                            '{"query_id": "2", "answers": "b"}\n')
    assert load_answers(tmp_path) == {"1": ["a"], "2": ["b"]}
    (tmp_path / "answers.jsonl").write_text('{"query_id": "1"}\n')
    with pytest.raises(DatasetError, match="line 1"):
        load_answers(tmp_path)


# ---------------------------------------------------------------- the command, end to end

CORPUS = [
    {"id": "d1", "title": "Refunds", "text": "Customers may ask for a refund within thirty days of purchase. "
                                             "Refunds go back to the original card."},
    {"id": "d2", "title": "Shipping", "text": "Orders ship within two business days from our warehouse in Busan."},
    {"id": "d3", "title": "Security", "text": "Passwords must be changed every ninety days."},
    {"id": "d4", "title": "환불 정책", "text": "구매 후 30일 이내에 환불을 요청할 수 있습니다. 환불은 원래 카드로 돌아갑니다."},
    {"id": "d5", "title": "배송 안내", "text": "주문은 영업일 기준 이틀 안에 부산 창고에서 발송됩니다."},
]
QUERIES = [
    {"id": "q1", "text": "How many days do customers have to ask for a refund?"},
    {"id": "q2", "text": "Where is the warehouse that orders ship from?"},
    {"id": "q3", "text": "환불은 구매 후 며칠 이내에 요청할 수 있나요?"},
    {"id": "q4", "text": "How often must passwords be changed?"},
    {"id": "q5", "text": "A question without a gold answer is not asked"},
]
# q2 is judged against the Korean shipping page on purpose: a citation of the English one is not relevant.
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td5\t1\nq3\td4\t1\nq4\td3\t1\nq5\td3\t1\n"
ANSWERS = [
    {"query_id": "q1", "answers": ["thirty days", "30 days"]},
    {"query_id": "q2", "answers": ["Busan"]},
    {"query_id": "q3", "answers": ["30일"]},
    {"query_id": "q4", "answers": ["every ninety days"]},
]
KEYS = {"answer_contains_gold", "citation_precision", "answer_chars_p50", "added_ms_p95", "cited_share"}


@pytest.fixture
def dataset_dir(tmp_path, settings):
    settings.EMBEDDING_CACHE_DIR = tmp_path / "cache"
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name, rows in (("corpus.jsonl", CORPUS), ("queries.jsonl", QUERIES), ("answers.jsonl", ANSWERS)):
        (folder / name).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    (folder / "qrels.tsv").write_text(QRELS)
    return folder


def tenant_count() -> int:
    with system_scope():
        return Tenant.objects.count()


def run_command(dataset_dir, tmp_path, *args):
    out, details = tmp_path / "answers.json", tmp_path / "details.jsonl"
    call_command("evaluate_answers", str(dataset_dir), "--json", str(out), "--details", str(details),
                 "--embedding-model", "use-multilingual", *args)
    rows = [json.loads(line) for line in details.read_text(encoding="utf-8").splitlines()]
    return json.loads(out.read_text()), {row["query_id"]: row for row in rows}


@pytest.mark.django_db
def test_generative_answers_are_scored_from_the_saved_message(dataset_dir, tmp_path, fake_llm, reply, capsys):
    """A fake model that always says the same sentence citing [1] (the best search hit): only q1 contains its
    gold, and three of the four citations are of a relevant passage (q2's is of the non-judged English page)."""
    sentence = "Customers may ask for a refund within thirty days [1]."
    reply(sentence)
    before = tenant_count()
    metrics, rows = run_command(dataset_dir, tmp_path, "--mode", "generative", "--target", fake_llm.target)

    assert set(metrics) == {"generative"} and set(metrics["generative"]) == KEYS
    m = metrics["generative"]
    assert m["answer_contains_gold"] == 0.25
    assert m["citation_precision"] == 0.75
    assert m["cited_share"] == 1.0
    assert m["answer_chars_p50"] == len(sentence)
    assert m["added_ms_p95"] is not None and m["added_ms_p95"] >= 0
    assert set(rows) == {"q1", "q2", "q3", "q4"}  # q5 has no gold answer
    assert rows["q1"]["found_gold"] and rows["q1"]["cited"] == ["d1"]
    assert rows["q2"]["cited"] == ["d2"] and rows["q2"]["relevant"] == ["d5"] and rows["q2"]["relevant_cited"] == 0
    assert rows["q3"]["cited"] == ["d4"]
    printed = capsys.readouterr().out
    assert "generative" in printed and "0.750" in printed
    assert tenant_count() == before  # the scratch tenant is gone


@pytest.mark.django_db
def test_limit_and_keep(dataset_dir, tmp_path, fake_llm, reply, capsys):
    reply("No idea.")
    before = tenant_count()
    metrics, rows = run_command(dataset_dir, tmp_path, "--mode", "generative", "--target", fake_llm.target,
                                "--limit", "2", "--keep")
    assert list(rows) == ["q1", "q2"]  # the first two in queries.jsonl order
    assert metrics["generative"]["answer_contains_gold"] == 0.0
    assert metrics["generative"]["citation_precision"] is None  # nothing cited: no precision to speak of
    assert metrics["generative"]["cited_share"] == 0.0
    assert tenant_count() == before + 1
    assert "kept the scratch tenant eval-" in capsys.readouterr().out


@pytest.mark.django_db
def test_bad_input_is_a_command_error(tmp_path, dataset_dir):
    with pytest.raises(CommandError):
        call_command("evaluate_answers", str(tmp_path))  # no corpus.jsonl
    (dataset_dir / "answers.jsonl").unlink()
    with pytest.raises(CommandError, match="answers.jsonl"):
        call_command("evaluate_answers", str(dataset_dir))
    with pytest.raises(CommandError):
        call_command("evaluate_answers", str(dataset_dir), "--limit", "0")


@pytest.mark.django_db
def test_extractive_answers_end_to_end(dataset_dir, tmp_path, capsys):
    """The default mode, no model anywhere: quoted passages that hold the gold for these easy questions, in
    English and Korean, each citing its passage."""
    before = tenant_count()
    metrics, rows = run_command(dataset_dir, tmp_path)  # --mode defaults to extractive

    assert set(metrics) == {"extractive"} and set(metrics["extractive"]) == KEYS
    m = metrics["extractive"]
    for qid in ("q1", "q3", "q4"):
        assert rows[qid]["status"] == "done" and rows[qid]["answered_by"] == "extractive"
        assert rows[qid]["found_gold"], rows[qid]["answer"]
        assert rows[qid]["relevant"][0] in rows[qid]["cited"]
    assert "30일" in rows["q3"]["answer"]
    assert m["cited_share"] == 1.0
    # q2's passage is judged against the Korean page, so quoting the English one costs precision.
    assert "d2" in rows["q2"]["cited"] and rows["q2"]["relevant_cited"] == 0
    assert 0 < m["citation_precision"] < 1
    cited = sum(len(r["cited"]) for r in rows.values())
    assert m["citation_precision"] == round(sum(r["relevant_cited"] for r in rows.values()) / cited, 4)
    assert 0 < m["answer_chars_p50"] <= 400
    assert m["added_ms_p95"] is not None
    assert tenant_count() == before
