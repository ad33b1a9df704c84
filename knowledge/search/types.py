"""What a search returns (contract between retrieval and its callers: chat, the search API, evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SearchHit:
    chunk_id: int
    document_id: int
    kb_id: int
    document_title: str
    text: str
    ordinal: int
    page: int | None = None
    heading_path: str = ""
    score: float = 0.0  # fused score; hits come best first
    bm25_score: float | None = None  # None: the lexical side did not match this chunk
    dense_score: float | None = None  # cosine similarity; None: not among the dense candidates
    bm25_rank: int | None = None
    dense_rank: int | None = None
    rerank_score: float | None = None  # cross-encoder score when a reranker is configured
    bm25_part: float = 0.0  # what each side added to the fused score (hybrid; the question's own fusion)
    dense_part: float = 0.0
    context_text: str = ""  # text with neighbouring chunks (when neighbours are on); else empty
    compressed_text: str | None = None  # relevant sentences only (when contextual compression is on)
    document_filename: str = ""

    @property
    def found_by(self) -> list[str]:
        return [side for side, rank in (("bm25", self.bm25_rank), ("dense", self.dense_rank)) if rank is not None]


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit]
    queries: list[str] = field(default_factory=list)  # the query plus any multi-query expansions
    warnings: list[str] = field(default_factory=list)  # e.g. "expansion model unavailable; searched without it"
    timings_ms: dict[str, float] = field(default_factory=dict)
    mode: str = "hybrid"  # hybrid | bm25 | dense
    settings: dict = field(default_factory=dict)  # the retrieval settings this search used
    query_language: str = ""  # "ko", "en", or "" (no letters)
    # How the question's hybrid fusion weighed the sides: {"kb_language", "lexical_coverage", "lexical_trust",
    # "bm25", "dense"} (fusion.side_weights); None in bm25 or dense mode.
    weights: dict | None = None
