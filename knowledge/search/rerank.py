"""Optional cross-encoder reranking (sentence-transformers CrossEncoder), when an operator configures a model.

The model is loaded lazily, once per process, from a local path or the local Hugging Face cache (nothing is
downloaded at run time). torch is imported only here, only when a KB names a reranker.
"""

from __future__ import annotations

import os
import threading
from functools import cache

_lock = threading.Lock()


@cache
def _load(name: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    from sentence_transformers import CrossEncoder  # imports torch: only in processes that rerank

    return CrossEncoder(name, device="cpu")


def rerank_scores(model: str, query: str, texts: list[str]) -> list[float]:
    with _lock:
        encoder = _load(model)
        scores = encoder.predict([(query, t) for t in texts], show_progress_bar=False)
    return [float(s) for s in scores]
