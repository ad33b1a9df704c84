"""On-disk cache of embeddings for evaluation and benchmarks (never used on the serving path).

Embedding a benchmark corpus takes minutes on two cores (an hour with multilingual-e5-small); the vectors only
depend on the model and the exact texts, so they are kept under var/cache/embeddings/<model>/<sha256 of the
texts>.npy and reused. While a set is embedded, the rows done so far are checkpointed beside it
(<name>.partial.npy, at most every CHECKPOINT_SECONDS), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
from django.conf import settings

from knowledge.embeddings import get_embedder

CHECKPOINT_SECONDS = 60.0


def cache_dir() -> Path:
    return Path(settings.EMBEDDING_CACHE_DIR)


def _fingerprint(texts: list[str], kind: str) -> str:
    digest = hashlib.sha256(kind.encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()[:32]


def embed_cached(model: str, texts: list[str], *, kind: str = "documents", batch_size: int = 64,
                 progress=None) -> np.ndarray:
    """Unit-length float32 vectors for `texts` (kind "documents" or "queries"), cached on disk."""
    path = cache_dir() / re.sub(r"[^\w.-]+", "_", model) / f"{kind}-{_fingerprint(texts, kind)}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
    embedder = get_embedder(model)
    partial = path.with_suffix(".partial.npy")
    parts = [np.load(partial)] if partial.exists() else []
    done = parts[0].shape[0] if parts else 0
    last_checkpoint = time.monotonic()
    for start in range(done, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        if kind == "queries":
            parts.append(np.stack([embedder.embed_query(t) for t in batch]))
        else:
            parts.append(np.asarray(embedder.embed_documents(batch)))
        if progress:
            progress(min(start + batch_size, len(texts)), len(texts))
        if time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS and start + batch_size < len(texts):
            parts = [np.concatenate(parts).astype(np.float32)]
            _save(partial, parts[0])
            last_checkpoint = time.monotonic()
    vectors = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, embedder.dim), np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms == 0, 1, norms)
    _save(path, vectors)
    partial.unlink(missing_ok=True)
    return vectors


def _save(path: Path, vectors: np.ndarray) -> None:
    """Write-then-rename, so a reader (or a resumed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
