"""Extractive answers: the passages of the retrieved chunks that answer the question, quoted verbatim.

No language model writes anything, so the answer can never say something the documents don't. Each retrieved
chunk is cut into units a reader can take on their own: sentences (sentencex; Kiwi's splitter for Korean
stretches without punctuation), list items, a table row together with its header row, a whole code block.
Units are scored against the question with BM25 over the search analyser's terms (stems, Korean character
bigrams) with idf from the retrieved units themselves, which is what tells the sentences of these chunks apart;
plus the question's word pairs found together (the sentence a question paraphrases), and, when the knowledge
base's embedding model runs in-process, the dense similarity of question and unit. A unit also gains from its
neighbours (the answer often sits in the sentence after the one naming the subject), from its chunk's search
rank, and when it holds what the question asks for (a number for "how many", a date for "when"). The best
units fill a small character budget and are quoted grouped by source, each with its citation number.
A question in one language over passages in the other shares no word with them: the answer then says that it
cannot quote across languages, and the sources list the passages the search found.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache, lru_cache

from sentencex import segment

from chat import defaults
from knowledge.search.analysis import BIGRAM_PREFIX, KOREAN_CONTENT_TAGS, Analyzer, AnalyzerConfig, _Kiwi

log = logging.getLogger(__name__)

# Quotes stop growing past this many characters (the first unit is always quoted whole).
CHAR_BUDGET = 420
MAX_UNITS = 3
MAX_UNIT_CHARS = 1200  # a unit longer than this (a huge table row or code block) is cut at a sentence end
HITS_CONSIDERED = 5
# A Korean "sentence" longer than this (or a quarter of it, without a final period) is checked for sentence
# ends without punctuation.
KIWI_SPLIT_CHARS = 240
# The best unit must hold this share of the question's term weight to be worth quoting at all.
MIN_COVERAGE = 0.2
# A further unit is quoted only when it scores at least this share of the best one.
SECOND_UNIT_RATIO = 0.45
APART_UNIT_RATIO = 0.75  # the same for a unit that is not next to one already chosen
OWN_SCORE_RATIO = 0.1
# A unit from another source joins only when it is nearly as good: each extra source is a citation that
# is more often wrong than right.
OTHER_SOURCE_RATIO = 0.9
NEIGHBOUR_WEIGHT = 0.3
RANK_WEIGHT = 0.25  # the score a unit of the top-ranked chunk gains over one of the fifth
K1, B = 1.2, 0.75
FUNCTION_BIGRAM_WEIGHT = 0.5
PHRASE_WEIGHT = 0.2
DENSE_WEIGHT = 0.3
DENSE_CANDIDATES = 16
PROSE = ("sentence",)
LEAD = {
    "en": "From the documents:",
    "ko": "문서에서 찾은 내용입니다.",
}
NOT_FOUND = {
    "en": "The documents I found don't seem to answer this, so I can't answer it from them.",
    "ko": "찾은 문서에 이 질문에 대한 답이 없는 것 같아 문서를 근거로 답변드릴 수 없습니다.",
}
# Keyed by the question's language; the passages are in the other one. Quoting can't bridge languages: no word
# matches, and picking a sentence by meaning alone was right for 1 of 5 covered questions in a browser trial
# (README "Answers"), so the answer says why and leaves the closest passages to the sources list.
NOT_FOUND_ACROSS = {
    "en": "The documents I found are in Korean, so I can't quote an answer to an English question from them. The "
          "passages closest in meaning are listed under the sources; an answer model can answer across languages.",
    "ko": "찾은 문서가 영어로 되어 있어 한국어 질문에 대한 답을 문서에서 그대로 인용할 수 없습니다. 뜻이 가장 가까운 "
          "문서는 출처에 있습니다. 답변 모델을 설정하면 다른 언어의 문서로도 답할 수 있습니다.",
}

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_LIST_ITEM = re.compile(r"^\s{0,6}(?:[-*+•]|\d{1,3}[.)])\s+\S")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_HANGUL = re.compile("[\uac00-\ud7a3]")
_DIGIT = re.compile(r"\d")
_YEAR_OR_DATE = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b|\d+\s*(년|월|일|세기)|"
                           r"\b(january|february|march|april|may|june|july|august|september|october|"
                           r"november|december|century)\b", re.I)
_WHEN = re.compile(r"\b(when|what year|which year|what date|what century)\b|언제|몇\s*년|연도|년도|날짜|몇\s*세기", re.I)
_NUMBER_WORD = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
                          r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
                          r"eighty|ninety|hundred|thousand|million|billion|dozen|half|once|twice)\b|"
                          r"[한두세네]\s?(번|개|명|차례|가지)|다섯|여섯|일곱|여덟|아홉", re.I)
_HOW_MANY = re.compile(r"\b(how (many|much|long|old|far|large|big|tall|high)|what (percentage|percent|number)"
                       r"|what amount)\b|몇|얼마", re.I)


@dataclass
class Unit:
    hit_index: int  # which retrieved chunk (0 = best ranked)
    position: int  # order within the chunk
    text: str  # the verbatim passage, as it will be quoted
    kind: str = "sentence"  # sentence | item | row | code
    paragraph: int = 0  # units of one paragraph are quoted together when both are chosen
    header: str = ""  # a table row's header row (quoted above it)
    terms: Counter = field(default_factory=Counter)  # the unit's terms, a table row's header row included
    own_terms: frozenset = frozenset()  # the terms of the unit's own text
    own_pairs: frozenset = frozenset()  # its adjacent non-Korean term pairs
    own_score: float = 0.0  # how well the unit's own words match the question
    score: float = 0.0  # with its neighbours, its source's rank and the answer type


@dataclass
class ExtractiveAnswer:
    text: str
    cited: list[int]  # 1-based numbers of the hits quoted
    found: bool  # False: nothing relevant enough; the text says so


# ------------------------------------------------------------------ cutting chunks into units

def _split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph. sentencex (rule-based, abbreviation-aware, ~25 µs a paragraph) splits at
    punctuation in both languages; a long Korean stretch it leaves whole often ends sentences without
    punctuation ("...했다 그리고"), which Kiwi's splitter finds (it is ~100x slower, so only then)."""
    sentences = []
    for sentence in segment("ko" if _HANGUL.search(paragraph) else "en", paragraph):
        sentence = sentence.strip()
        unpunctuated = len(sentence) > KIWI_SPLIT_CHARS // 4 and not sentence.endswith((".", "?", "!", "。", "”", '"'))
        if (unpunctuated or len(sentence) > KIWI_SPLIT_CHARS) and _HANGUL.search(sentence):
            sentences += [s.text.strip() for s in _Kiwi.get().split_into_sents(sentence)]
        elif sentence:
            sentences.append(sentence)
    return sentences


def _cells(line: str) -> int:
    return line.strip().strip("|").count("|") + 1


def _is_table_block(lines: list[str]) -> bool:
    """Pipe tables: markdown ones (with a separator row) and CSV chunks (a header line, then rows)."""
    if len(lines) < 2 or not all("|" in line for line in lines):
        return False
    if _TABLE_SEPARATOR.match(lines[1]):
        return True
    width = _cells(lines[0])
    return width >= 2 and all(_cells(line) == width for line in lines)


def _is_plain_heading(line: str, following: str) -> bool:
    """A plain-text heading: a short line without final punctuation over a clearly longer line ("Tickets" over
    "An adult ticket costs..."), where a wrapped paragraph's lines are all about as long."""
    line = line.strip()
    return (0 < len(line) <= 60 and bool(following.strip()) and not _LIST_ITEM.match(line)
            and not line.endswith((".", ",", ";", ":", "!", "?", "…", "-", ")", "다", "요"))
            and len(line) < 0.6 * len(following.strip()))


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """The chunk as (kind, lines) blocks: code fences, tables, list items, headings, paragraphs."""
    lines = text.split("\n")
    blocks: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith(fence.group(1)):
                j += 1
            blocks.append(("code", lines[i:j + 1]))
            i = j + 1
            continue
        if "|" in line:
            j = i
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                j += 1
            if _is_table_block(lines[i:j]):
                blocks.append(("table", lines[i:j]))
                i = j
                continue
        if _HEADING.match(line) or _is_plain_heading(line, lines[i + 1] if i + 1 < len(lines) else ""):
            blocks.append(("heading", [line]))
            i += 1
            continue
        kind = "item" if _LIST_ITEM.match(line) else "paragraph"
        j = i + 1
        # A paragraph (or list item) goes on over wrapped lines; a blank line, a new item or block ends it.
        while j < len(lines) and lines[j].strip() and not (
            _LIST_ITEM.match(lines[j]) or _HEADING.match(lines[j]) or _FENCE.match(lines[j])
            or (kind == "paragraph" and lines[j].lstrip().startswith("|"))
        ):
            j += 1
        blocks.append((kind, lines[i:j]))
        i = j
    return blocks


def _join(lines: list[str]) -> str:
    return " ".join(line.strip() for line in lines if line.strip())


def split_units(text: str, *, hit_index: int = 0) -> list[Unit]:
    """The quotable units of one chunk, in order."""
    units: list[Unit] = []
    for paragraph, (kind, lines) in enumerate(_blocks(text or "")):
        if kind == "heading":
            continue
        if kind == "code":
            units.append(Unit(hit_index, len(units), "\n".join(lines).strip("\n"), "code", paragraph))
        elif kind == "table":
            has_separator = bool(_TABLE_SEPARATOR.match(lines[1]))
            header = lines[0].strip()
            for row in lines[2 if has_separator else 1:]:
                units.append(Unit(hit_index, len(units), row.strip(), "row", paragraph, header=header))
        elif kind == "item":
            units.append(Unit(hit_index, len(units), _join(lines), "item", paragraph))
        else:
            for sentence in _split_sentences(_join(lines)):
                units.append(Unit(hit_index, len(units), sentence.strip(), "sentence", paragraph))
    return [unit for unit in units if unit.text]


# ------------------------------------------------------------------ scoring

@cache
def _analyzer():
    """The search analyser without Korean morphemes: character bigrams alone match as well at sentence level
    and are ~50x faster than a morphological analysis of every sentence."""
    return Analyzer(AnalyzerConfig(morphemes=False))


@lru_cache(maxsize=256)
def question_weights(question: str) -> dict[str, float]:
    """The question's terms and their weights. Korean character bigrams outside content words (Kiwi's nouns,
    verb and adjective stems...) weigh less, so the endings of "어떻게 해야 하나요" hardly match every sentence."""
    terms = set(_analyzer().tokens(question)) - QUESTION_WORDS
    if not _HANGUL.search(question):
        return dict.fromkeys(terms, 1.0)
    content = [t.form for t in _Kiwi.get().tokenize(question) if t.tag in KOREAN_CONTENT_TAGS and len(t.form) > 1]
    allowed = {BIGRAM_PREFIX + word[i:i + 2] for word in content for i in range(len(word) - 1)}
    return {t: 1.0 if not t.startswith(BIGRAM_PREFIX) or t in allowed else FUNCTION_BIGRAM_WEIGHT for t in terms}


def question_terms(question: str) -> set[str]:
    return set(question_weights(question))


# Words that ask rather than say: they match headers like "what_is_indexed", never an answer.
QUESTION_WORDS = frozenset(
    ["what", "which", "who", "whom", "whose", "when", "where", "whi", "why", "how", "do", "doe", "did", "can", "could",
     "would", "should", "much", "mani"]  # stemmed, as the analyser gives them ("which" -> "whi", "many" -> "mani");
    # not "may": it is also a month
    + [BIGRAM_PREFIX + b for b in ("무엇", "어디", "언제", "누구", "어떻", "떻게", "얼마", "어느", "무슨", "엇인", "인가", "가요", "나요")])


def _answer_type_bonus(question: str, unit: Unit) -> float:
    """A small lift for units holding what the question asks for (a date, a number)."""
    if _WHEN.search(question):
        return 0.15 if _YEAR_OR_DATE.search(unit.text) else 0.0
    if _HOW_MANY.search(question):
        return 0.15 if _DIGIT.search(unit.text) or _NUMBER_WORD.search(unit.text) else 0.0
    return 0.0


def _analyse(units: list[Unit]) -> None:
    """Each unit's terms, analysed once (a table's header row once per table)."""
    analyzer = _analyzer()
    headers: dict[str, list[str]] = {}
    for unit in units:
        own = analyzer.tokens(unit.text)
        header = headers.setdefault(unit.header, analyzer.tokens(unit.header)) if unit.header else []
        unit.terms = Counter(own + header)
        unit.own_terms = frozenset(own)
        unit.own_pairs = _pairs(own)


def score_units(question: str, units: list[Unit], *, similarity=None) -> None:
    """Score every unit in place (1.0 is about every question term, once, in an average-length unit).
    `similarity(question, texts)`: optional cosine similarities of the question to each text, or to the first
    (best) of them only (a dense model)."""
    query_terms = set(question_terms(question))
    if not units or not query_terms:
        return
    _analyse(units)
    n = len(units)
    df = Counter(term for unit in units for term in set(unit.terms) & query_terms)
    weights = question_weights(question)
    idf = {t: weights[t] * math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in query_terms}
    # A question word found in no unit still counts in the mass: missing it lowers every unit's coverage.
    mass = sum(idf.values()) or 1.0
    avg_len = sum(sum(u.terms.values()) for u in units) / n or 1.0
    question_pairs = _pairs(_analyzer().tokens(question))
    raw = []
    for unit in units:
        length = sum(unit.terms.values())
        score = 0.0
        for term in query_terms & set(unit.terms):
            tf = unit.terms[term]
            score += idf[term] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / avg_len))
        score /= (K1 + 1) * mass  # 1.0 = every question term, once, in an average-length unit
        if question_pairs and score:
            # Word pairs of the question found together in the unit: the sentence the question paraphrases.
            score += PHRASE_WEIGHT * len(question_pairs & unit.own_pairs) / len(question_pairs)
        raw.append(score)
    lexical = list(raw)
    # Only the best lexical candidates are embedded: that bounds the time whatever the chunks' size.
    matching = sorted((i for i, r in enumerate(raw) if r > 0), key=lambda i: -raw[i])[:int(DENSE_CANDIDATES)]
    if similarity is not None and matching:
        # Meaning, beside the words: only for units that share a word with the question (fewer to embed).
        try:
            cosines = similarity(question, [units[i].text for i in matching])
        except Exception:  # noqa: BLE001 - the embedding model failed: words alone still answer
            log.warning("sentence similarity failed; quoting by words alone", exc_info=True)
            cosines = [0.0] * len(matching)
        cosines = [max(0.0, float(c)) for c in cosines]  # may cover only the first (best) texts: a slower model
        floor = min(cosines, default=0.0)  # a unit not embedded is taken as no closer than the least of those
        by_index = dict(zip(matching, cosines, strict=False))
        for i, r in enumerate(raw):
            if r > 0:
                raw[i] += DENSE_WEIGHT * by_index.get(i, floor)
    by_hit: dict[int, list[int]] = {}
    for i, unit in enumerate(units):
        by_hit.setdefault(unit.hit_index, []).append(i)
    for indexes in by_hit.values():
        for pos, i in enumerate(indexes):
            # A sentence continues its neighbours' thought; list items, table rows and code blocks stand alone.
            neighbours = [raw[indexes[p]] for p in (pos - 1, pos + 1) if 0 <= p < len(indexes)
                          if units[i].kind in PROSE and units[indexes[p]].kind in PROSE]
            rank_prior = RANK_WEIGHT * (1 - min(units[i].hit_index, HITS_CONSIDERED) / HITS_CONSIDERED)
            bonus = rank_prior + _answer_type_bonus(question, units[i]) if raw[i] > 0 else 0.0
            units[i].own_score = lexical[i]
            units[i].score = raw[i] + NEIGHBOUR_WEIGHT * max(neighbours, default=0.0) + bonus


def _pairs(tokens: list[str]) -> frozenset[tuple[str, str]]:
    """Adjacent pairs of (non-Korean) terms; Korean bigrams already carry their own adjacency."""
    words = [t for t in tokens if not t.startswith(BIGRAM_PREFIX) and t not in QUESTION_WORDS]
    return frozenset(zip(words, words[1:], strict=False))


def coverage(question: str, unit: Unit) -> float:
    """Share of the question's term weight that the unit holds. A table row's header counts only once the row
    matches by its own words: every row has it ("o3 input price" is covered by the o3 row, "input price" by none)."""
    weights = question_weights(question)
    total = sum(weights.values())
    held = unit.own_terms
    if unit.kind == "row" and held & weights.keys():
        held = unit.terms.keys()
    return sum(w for t, w in weights.items() if t in held) / total if total else 0.0


# ------------------------------------------------------------------ choosing and quoting

def select_units(question: str, units: list[Unit], *, similarity=None) -> list[Unit]:
    """The best unit, plus the next best ones that fit the budget and score close enough."""
    score_units(question, units, similarity=similarity)
    ranked = sorted((u for u in units if u.score > 0), key=lambda u: (-u.score, u.hit_index, u.position))
    if not ranked or coverage(question, ranked[0]) < MIN_COVERAGE:
        return []
    best = ranked[0]
    chosen = [best]
    used = len(best.text)
    query_terms = set(question_terms(question))
    seen = {_plain(best.text)}
    for unit in ranked[1:]:
        if len(chosen) >= MAX_UNITS:
            break
        if _plain(unit.text) in seen:
            continue  # the same passage in a near-duplicate chunk: quoting it again adds only a citation
        seen.add(_plain(unit.text))
        if unit.kind == "row" and not query_terms & unit.own_terms:
            continue  # another row matched only through the shared header row
        if unit.own_score < OWN_SCORE_RATIO * best.own_score:
            continue  # it rides on its neighbour or its source's rank, not on what it says
        adjacent = unit.kind in PROSE and any(
            u.hit_index == unit.hit_index and abs(u.position - unit.position) == 1 and u.kind in PROSE for u in chosen)
        ratio = SECOND_UNIT_RATIO if adjacent else APART_UNIT_RATIO
        if unit.score < ratio * best.score or used + len(unit.text) > CHAR_BUDGET:
            continue
        if unit.kind not in PROSE and unit.own_score < ratio * best.own_score:
            continue  # a list item, row or code block stands alone: it must match by its own words
        if unit.hit_index != best.hit_index and unit.score < OTHER_SOURCE_RATIO * best.score:
            continue
        chosen.append(unit)
        used += len(unit.text)
    return chosen


def _plain(text: str) -> str:
    return " ".join(text.lower().split())


def _clip(text: str) -> str:
    if len(text) <= MAX_UNIT_CHARS:
        return text
    cut = text[:MAX_UNIT_CHARS]
    end = max(cut.rfind(". "), cut.rfind("다. "), cut.rfind("\n"))
    return (cut[:end + 1] if end > MAX_UNIT_CHARS // 2 else cut).rstrip() + " …"


def _quote(units: list[Unit], n: int) -> str:
    """One source's chosen units in document order: prose joined per paragraph, rows as a table, code fenced."""
    parts: list[str] = []
    rows: list[Unit] = []
    for unit in sorted(units, key=lambda u: u.position):
        if unit.kind == "row":
            rows.append(unit)
            continue
        if unit.kind == "code":
            parts.append(_clip(unit.text))
        elif parts and unit.kind == "sentence" and (previous := _previous_prose(units, unit)) is not None \
                and previous.paragraph == unit.paragraph:
            # Sentences of one paragraph stay one quote; a gap between them is marked, never closed silently.
            parts[-1] += (" " if unit.position - previous.position == 1 else " … ") + unit.text
        else:
            parts.append(_clip(unit.text))
    if rows:
        header = rows[0].header
        width = _cells(header)
        table = [_as_table_line(header), "|" + " --- |" * width]
        table += [_as_table_line(row.text) for row in rows]
        parts.append("\n".join(table))
    body = "\n\n".join(parts)
    quoted = "\n".join("> " + line if line.strip() else ">" for line in body.split("\n"))
    ends_in_block = bool(rows) or max(units, key=lambda u: u.position).kind == "code"
    return f"{quoted}\n>\n> [{n}]" if ends_in_block else f"{quoted} [{n}]"


def _previous_prose(units: list[Unit], unit: Unit) -> Unit | None:
    """The chosen unit quoted right before `unit` (rows go to their own table at the end)."""
    previous = [u for u in units if u.position < unit.position and u.kind != "row"]
    return max(previous, key=lambda u: u.position) if previous else None


def _as_table_line(line: str) -> str:
    line = line.strip()
    if not line.startswith("|"):
        line = "| " + line
    if not line.endswith("|"):
        line += " |"
    return line


def extractive_answer(*, question: str, hits: list, similarity=None) -> ExtractiveAnswer:
    """Quote the passages of `hits` (ranked search hits, numbered [1..n]) that answer `question`."""
    language = defaults.language_of(question)
    units: list[Unit] = []
    for index, hit in enumerate(hits[:HITS_CONSIDERED]):
        units += split_units(hit.text, hit_index=index)
    chosen = select_units(question, units, similarity=similarity)
    if not chosen:
        across = bool(units) and defaults.language_of(" ".join(u.text for u in units)) != language
        return ExtractiveAnswer(text=(NOT_FOUND_ACROSS if across else NOT_FOUND)[language], cited=[], found=False)
    by_hit: dict[int, list[Unit]] = {}
    for unit in chosen:  # best first, so sources appear in the order of their best passage
        by_hit.setdefault(unit.hit_index, []).append(unit)
    quotes = [_quote(group, index + 1) for index, group in by_hit.items()]
    text = LEAD[language] + "\n\n" + "\n\n".join(quotes)
    return ExtractiveAnswer(text=text, cited=[index + 1 for index in by_hit], found=True)
