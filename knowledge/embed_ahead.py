"""Embedding the next batch while a run stores the current one.

An ingestion run spends about a third of its time besides the model: writing chunks, analysing their BM25
terms, indexing. An in-process model spends most of its time in numpy/C code that releases the GIL, and the
database works in its own process, so embedding batch N+1 in a thread while the run stores batch N puts that
work on a second core. Results do not change: each batch is embedded by the same model from the same texts,
and stored in order by the run's own thread (the only one that touches the database).

A billed model (the gateway: quota reservations and usage records in the database) is not run ahead: its calls
stay in the run's thread, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from knowledge.embeddings import Embedder


class EmbedAhead:
    """One batch embedded ahead at most. Use as a context manager: leaving it (also by an exception) waits for
    a batch still being embedded, so no thread outlives the run."""

    def __init__(self, embed: Callable[[Embedder, list], np.ndarray]):
        self._embed = embed  # (embedder, batch of chunk drafts) -> vectors
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[Embedder, list, Future] | None = None

    def __enter__(self) -> EmbedAhead:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def prefetch(self, embedder: Embedder, batch: list) -> None:
        """Start embedding `batch` (an in-process model's), to be taken by vectors()."""
        if embedder.billed:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-ahead")
        self._pending = (embedder, batch, self._pool.submit(self._embed, embedder, batch))

    def vectors(self, embedder: Embedder, batch: list) -> np.ndarray:
        """The vectors of `batch` by `embedder`: the prefetched ones (an error there is raised here), or embedded
        now when nothing, or something else, was prefetched (e.g. the KB switched models meanwhile)."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] is embedder and pending[1] is batch:
            return pending[2].result()
        if pending is not None:
            pending[2].cancel()  # not started yet: dropped; running: finishes unused
        return self._embed(embedder, batch)
