"""The extractive answerer on its own: units (sentences, items, table rows, code), scoring, quoting."""

from dataclasses import dataclass

from chat import extractive
from chat.extractive import extractive_answer, split_units


@dataclass
class Hit:
    text: str


def texts(units):
    return [(u.kind, u.text) for u in units]


def test_english_sentences_split_at_ends_but_not_at_abbreviations():
    units = split_units("Dr. J. Smith joined in Jan. 2020. He leads the U.S. team. It has 5 members.")
    assert [u.text for u in units] == ["Dr. J. Smith joined in Jan. 2020.", "He leads the U.S. team.",
                                       "It has 5 members."]


def test_korean_sentences_split_with_and_without_final_punctuation():
    units = split_units("환불은 구매 후 30일 이내에 가능합니다. 배송은 무료입니다.")
    assert [u.text for u in units] == ["환불은 구매 후 30일 이내에 가능합니다.", "배송은 무료입니다."]
    no_periods = ("문서를 올리면 작업자가 파일을 읽고 작은 단락으로 나누어 키워드 검색과 의미 검색에 모두 색인합니다 "
                  "처리가 끝나면 문서의 상태가 준비됨으로 바뀌고 진행률 막대가 사라집니다 "
                  "그다음 채팅 화면에서 어시스턴트를 고르고 문서에 대해 질문할 수 있습니다 "
                  "답변 아래에는 근거가 된 문서와 쪽 번호가 출처로 함께 표시됩니다")
    units = split_units(no_periods)  # Kiwi finds the sentence ends that have no period
    assert [u.text for u in units][:2] == ["문서를 올리면 작업자가 파일을 읽고 작은 단락으로 나누어 키워드 검색과 의미 검색에 모두 색인합니다",
                                           "처리가 끝나면 문서의 상태가 준비됨으로 바뀌고 진행률 막대가 사라집니다"]
    assert len(units) == 4


def test_wrapped_markdown_lines_are_one_paragraph():
    units = split_units("Refunds are possible within\n30 days of purchase. Shipping\nis free.")
    assert [u.text for u in units] == ["Refunds are possible within 30 days of purchase.", "Shipping is free."]


def test_list_items_code_blocks_and_headings_are_units_not_split():
    text = ("# Install\n\nSteps:\n\n- Run the installer. Then reboot.\n- Log in\n  with your account.\n\n"
            "```python\n# not a heading\nprint('a. b. c.')\n```\n")
    assert texts(split_units(text)) == [
        ("sentence", "Steps:"),
        ("item", "- Run the installer. Then reboot."),
        ("item", "- Log in with your account."),
        ("code", "```python\n# not a heading\nprint('a. b. c.')\n```"),
    ]


def test_table_rows_keep_their_header_row():
    text = "| Model | Input | Output |\n|---|---|---|\n| small | $0.15 | $0.60 |\n| large | $2.50 | $10 |"
    rows = split_units(text)
    assert [(u.kind, u.text, u.header) for u in rows] == [
        ("row", "| small | $0.15 | $0.60 |", "| Model | Input | Output |"),
        ("row", "| large | $2.50 | $10 |", "| Model | Input | Output |")]


def test_csv_chunk_rows_are_table_rows():
    text = "format | extensions | notes\nPDF | .pdf | the text layer\nCSV | .csv | rows in groups"
    assert [(u.kind, u.header) for u in split_units(text)] == [("row", "format | extensions | notes")] * 2


def test_answer_quotes_the_matching_table_row_under_its_header():
    hits = [Hit("| Model | Input price | Output price |\n|---|---|---|\n| small | $0.15 | $0.60 |\n"
                "| large | $2.50 | $10.00 |")]
    answer = extractive_answer(question="What is the output price of the large model?", hits=hits)
    assert answer.found and answer.cited == [1]
    assert "> | Model | Input price | Output price |" in answer.text
    assert "> | large | $2.50 | $10.00 |" in answer.text and "small" not in answer.text


def test_answer_is_verbatim_and_cited():
    source = ("The warranty lasts two years. It covers defects in materials. Batteries are covered for one "
              "year. Our office is in Seoul.")
    answer = extractive_answer(question="How long does the warranty last?", hits=[Hit(source)])
    assert answer.found and answer.cited == [1]
    quoted = [line[2:].removesuffix(" [1]") for line in answer.text.split("\n") if line.startswith("> ")]
    assert quoted and all(part in source for part in quoted)
    assert "two years" in answer.text and "Seoul" not in answer.text


def test_the_answer_can_come_from_a_lower_ranked_source():
    hits = [Hit("Our office is in Seoul. Parking is free for visitors."),
            Hit("The warranty lasts two years and covers defects in materials.")]
    answer = extractive_answer(question="How long does the warranty last?", hits=hits)
    assert answer.cited == [2] and answer.text.rstrip().endswith("[2]")


def test_unrelated_question_is_not_answered():
    answer = extractive_answer(question="What is the capital of Mars?",
                               hits=[Hit("Refunds are possible within 30 days of purchase.")])
    assert not answer.found and answer.cited == [] and answer.text == extractive.NOT_FOUND["en"]
    korean = extractive_answer(question="화성의 수도는 어디인가요?", hits=[Hit("환불은 30일 이내에 가능합니다.")])
    assert korean.text == extractive.NOT_FOUND["ko"]


def test_the_answer_stays_within_budget_when_the_source_is_long():
    sentences = [f"The warranty clause number {i} lasts {i} years for part {i}." for i in range(40)]
    answer = extractive_answer(question="How many years does the warranty last?", hits=[Hit(" ".join(sentences))])
    assert len(answer.text) < extractive.CHAR_BUDGET + 120


def test_code_block_is_quoted_whole_with_the_citation_outside_the_fence():
    hits = [Hit("Install it:\n\n```sh\npip install ragdesk\nragdesk migrate\n```")]
    answer = extractive_answer(question="How do I install ragdesk with pip?", hits=hits)
    assert "> ```sh\n> pip install ragdesk\n> ragdesk migrate\n> ```" in answer.text
    assert answer.text.endswith("> [1]")


def test_plain_text_headings_are_not_glued_to_the_next_sentence():
    text = "Opening hours\nThe orchard opens at 9 am and closes at 6 pm every day except Monday.\n"
    assert texts(split_units(text)) == [
        ("sentence", "The orchard opens at 9 am and closes at 6 pm every day except Monday.")]
    wrapped = ("The orchard opens at 9 am and closes at 6 pm every day except\nMonday, when the staff prune "
               "the trees.")
    assert len(split_units(wrapped)) == 1


def test_dense_similarity_picks_between_sentences_that_share_the_same_words():
    source = "The museum ticket price is listed at the door. The museum ticket costs twelve euros for adults."
    question = "What does a museum ticket cost?"

    def prefers_euros(question, texts):
        return [0.9 if "euros" in text else 0.1 for text in texts]

    assert "twelve euros" in extractive_answer(question=question, hits=[Hit(source)], similarity=prefers_euros).text

    def broken(question, texts):
        raise RuntimeError("model crashed")

    assert extractive_answer(question=question, hits=[Hit(source)], similarity=broken).found


def test_word_pairs_of_the_question_point_at_the_sentence_it_paraphrases():
    source = ("Newton was picked first in the 2011 draft. "
              "Von Miller was the second pick in the 2011 NFL draft, after Newton.")
    answer = extractive_answer(question="Who was the second pick in the 2011 NFL draft?", hits=[Hit(source)])
    first_quote = answer.text.split("\n\n")[1]
    assert "Von Miller" in first_quote


def test_similarity_may_score_only_the_best_candidates():
    source = "The museum ticket price is listed at the door. The museum ticket costs twelve euros for adults."

    def first_only(question, texts):
        return [0.9] if texts else []

    answer = extractive_answer(question="What does a museum ticket cost?", hits=[Hit(source)], similarity=first_only)
    assert answer.found and answer.cited == [1]


def test_a_neighbouring_list_item_is_not_quoted_for_sharing_a_topic_word():
    text = ("1. Documents stay queued for long\nCheck that the Celery worker is running; a watchdog re-queues "
            "documents every 15 seconds.\n\n2. Documents are missing from search results\nCheck that the "
            "document status is ready before searching documents.\n")
    answer = extractive_answer(question="What should I do when documents stay queued for long?", hits=[Hit(text)])
    assert "watchdog" in answer.text and "missing from search" not in answer.text


def test_close_matches_in_different_list_items_are_both_quoted():
    text = ("- The Basic plan costs 10 euros a month.\n- The Team plan costs 30 euros a month.\n"
            "- Support is by email.\n")
    answer = extractive_answer(question="How much does the plan cost per month?", hits=[Hit(text)])
    assert "Basic plan costs 10 euros" in answer.text and "Team plan costs 30 euros" in answer.text


def test_sentences_quoted_from_apart_in_a_paragraph_show_the_gap():
    from chat.extractive import Unit, _quote

    units = [Unit(0, 0, "The warranty lasts two years.", paragraph=0),
             Unit(0, 2, "Batteries are covered for one year.", paragraph=0)]
    assert _quote(units, 1) == "> The warranty lasts two years. … Batteries are covered for one year. [1]"
    units[1].position = 1
    assert _quote(units, 1) == "> The warranty lasts two years. Batteries are covered for one year. [1]"


PRICE_HEADER = "| Model | Input (per 1M tokens) | Output (per 1M tokens) |\n|---|---|---|\n"


def test_a_row_named_by_the_question_is_quoted_with_its_header_words_counting():
    """"o3 ... input tokens": the o3 row holds only "o3" itself; the header holds the rest of the question."""
    hits = [Hit(PRICE_HEADER + "| gpt-4o | $2.50 | $10.00 |\n| o3 | $2.00 | $8.00 |\n| o4-mini | $1.10 | $4.40 |")]
    answer = extractive_answer(question="How much does o3 cost per 1M input tokens?", hits=hits)
    assert answer.found and "| o3 | $2.00 | $8.00 |" in answer.text and "gpt-4o" not in answer.text


def test_a_question_matching_only_the_header_quotes_no_row():
    hits = [Hit(PRICE_HEADER + "| gpt-4o | $2.50 | $10.00 |\n| o3 | $2.00 | $8.00 |")]
    answer = extractive_answer(question="What is the input price per 1M tokens?", hits=hits)
    assert not answer.found


def test_the_row_named_by_the_question_wins_over_a_higher_ranked_chunk_of_the_same_table():
    hits = [Hit(PRICE_HEADER + "| gpt-4o | $2.50 | $10.00 |\n| gpt-4.1 | $2.00 | $8.00 |"),
            Hit(PRICE_HEADER + "| gpt-4o-mini | $0.15 | $0.60 |\n| gpt-4.1-mini | $0.40 | $1.60 |")]
    answer = extractive_answer(question="What is the output price of gpt-4o-mini?", hits=hits)
    assert "| gpt-4o-mini | $0.15 | $0.60 |" in answer.text and answer.cited == [2]
