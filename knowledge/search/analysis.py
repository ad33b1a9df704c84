"""Text analysis for the BM25 index: one script-aware analyser per process.

Text is split into words, and words into script runs: Hangul runs go through the Kiwi morphological analyser
(content morphemes) and also give character bigrams (strong on compounds, names, codes and OCR noise, where a
morpheme analyser splits differently in the question and the passage); other runs (Latin letters, digits)
go through a standard English analyser (lowercase, Lucene's English stopwords, Snowball stemming). A Latin
word glued to a Korean particle ("BST란", "API를", "Python으로") therefore gives its English term ("bst",
"api", "python"), as it would in English text. A Korean page that quotes
English terms, or an English manual with Korean notes, is therefore analysed correctly without a language
switch; the KB language only chooses defaults (see `analyzer_for`).

Morphemes and bigrams share one index (measured best on the Korean sets); bigrams carry a prefix so a
two-syllable morpheme and a bigram of the same letters stay distinct terms.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import cache

import Stemmer

# Lucene's EnglishAnalyzer stopword set (33 words).
ENGLISH_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with"]
)

_HANGUL = "\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_HANGUL_CHAR = re.compile(f"[{_HANGUL}]")
_HANGUL_RUN = re.compile(f"[{_HANGUL}]+")
_NON_HANGUL_RUN = re.compile(f"[^\\W_{_HANGUL}]+", re.UNICODE)  # a word's letters and digits outside Hangul
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)

# Kiwi tags whose morphemes carry meaning: nouns, numerals, pronouns, verb/adjective stems, roots,
# adverbs, determiners. Particles (J*), endings (E*), affixes and symbols are left to the bigrams.
KOREAN_CONTENT_TAGS = frozenset({"NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "MAG", "MM", "VV-R", "VA-R",
                                 "VV-I", "VA-I", "XSN"})
MAX_TOKEN_LENGTH = 64  # longer "words" (hashes, base64, URLs run together) are dropped
BIGRAM_PREFIX = "\u2082"  # "₂": never produced by the word splitter's output alphabet for morphemes


def hangul_ratio(text: str) -> float:
    """Share of letters that are Hangul (0.0 for text without letters)."""
    letters = _LETTER.findall(text)
    if not letters:
        return 0.0
    return sum(1 for ch in letters if _HANGUL_CHAR.match(ch)) / len(letters)


@dataclass(frozen=True)
class AnalyzerConfig:
    stem: bool = True
    stopwords: bool = True
    morphemes: bool = True
    bigrams: bool = True

    @property
    def signature(self) -> str:
        """Changes whenever analysis changes, so an index built with other settings can be detected."""
        flags = "".join(name[0] for name in ("stem", "stopwords", "morphemes", "bigrams") if getattr(self, name))
        return f"v2:{flags}"  # v2: Latin and digit runs split from Hangul inside a word


class _Kiwi:
    """One Kiwi instance per process, loaded on first Korean text (it loads its model, ~1 s)."""

    _instance = None
    _lock = threading.Lock()

    @classmethod
    def get(cls):
        if cls._instance is None:
            with cls._lock:
                if cls._instance is None:
                    from kiwipiepy import Kiwi  # native library and model: only processes that see Korean

                    cls._instance = Kiwi(num_workers=-1)  # -1: no worker threads, analyse in the caller
        return cls._instance


@cache
def _stemmer():
    return Stemmer.Stemmer("english")


_stem_lock = threading.Lock()


class Analyzer:
    def __init__(self, config: AnalyzerConfig | None = None):
        self.config = config or AnalyzerConfig()

    @property
    def signature(self) -> str:
        return self.config.signature

    def _latin(self, words: list[str]) -> list[str]:
        words = [w.lower() for w in words]
        if self.config.stopwords:
            words = [w for w in words if w not in ENGLISH_STOPWORDS]
        if self.config.stem and words:
            with _stem_lock:  # PyStemmer objects are not thread-safe
                words = _stemmer().stemWords(words)
        return words

    def _korean(self, text: str) -> list[str]:
        tokens: list[str] = []
        if self.config.morphemes:
            for token in _Kiwi.get().tokenize(text):
                if token.tag in KOREAN_CONTENT_TAGS and _HANGUL_CHAR.search(token.form):
                    tokens.append(token.form)
        if self.config.bigrams:
            for run in _HANGUL_RUN.findall(text):
                if len(run) == 1:
                    tokens.append(BIGRAM_PREFIX + run)
                else:
                    tokens.extend(BIGRAM_PREFIX + run[i : i + 2] for i in range(len(run) - 1))
        return tokens

    def tokens(self, text: str) -> list[str]:
        """The terms of `text`, in order, with repeats (BM25 counts them)."""
        text = unicodedata.normalize("NFKC", text or "")
        words = _WORD.findall(text)
        latin = [run for w in words for run in _NON_HANGUL_RUN.findall(w)]
        out = self._latin(latin)
        if any(_HANGUL_CHAR.search(w) for w in words):
            out.extend(self._korean(text))
        return [t for t in out if len(t) <= MAX_TOKEN_LENGTH]


@cache
def analyzer_for(signature_or_language: str = "auto") -> Analyzer:
    """The process-wide analyser for a KB. Every language currently shares the script-aware analyser."""
    return Analyzer(AnalyzerConfig())
