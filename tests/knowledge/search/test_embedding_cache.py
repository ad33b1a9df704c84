"""The evaluation embedding cache: vectors reused, and an interrupted run resumed from its checkpoint."""

import numpy as np
import pytest

from knowledge.search import embedding_cache


class CountingEmbedder:
    """Deterministic vectors; counts the texts it embeds and fails once `fail_after` texts are done."""

    dim = 4

    def __init__(self, fail_after=None):
        self.embedded = 0
        self.fail_after = fail_after

    def embed_documents(self, texts):
        if self.fail_after is not None and self.embedded >= self.fail_after:
            raise KeyboardInterrupt  # the run is stopped
        self.embedded += len(texts)
        return np.array([[len(t), 1.0, 0.0, 0.0] for t in texts], dtype=np.float32)


@pytest.fixture
def cache(settings, tmp_path, monkeypatch):
    settings.EMBEDDING_CACHE_DIR = tmp_path
    monkeypatch.setattr(embedding_cache, "CHECKPOINT_SECONDS", 0.0)  # checkpoint after every batch


def test_an_interrupted_run_resumes_from_its_checkpoint(cache, monkeypatch):
    texts = [f"passage {'x' * i}" for i in range(10)]
    stopped = CountingEmbedder(fail_after=6)
    monkeypatch.setattr(embedding_cache, "get_embedder", lambda model: stopped)
    with pytest.raises(KeyboardInterrupt):
        embedding_cache.embed_cached("m", texts, batch_size=3)

    resumed = CountingEmbedder()
    monkeypatch.setattr(embedding_cache, "get_embedder", lambda model: resumed)
    vectors = embedding_cache.embed_cached("m", texts, batch_size=3)
    assert resumed.embedded == 4  # the 6 checkpointed rows were not embedded again

    folder = embedding_cache.cache_dir() / "m"
    assert not list(folder.glob("*.partial.npy"))  # the checkpoint is gone once the set is complete
    for path in folder.iterdir():
        path.unlink()
    monkeypatch.setattr(embedding_cache, "get_embedder", lambda model: CountingEmbedder())
    assert np.allclose(vectors, embedding_cache.embed_cached("m", texts, batch_size=3))  # same as in one go


def test_cached_vectors_are_reused(cache, monkeypatch):
    embedder = CountingEmbedder()
    monkeypatch.setattr(embedding_cache, "get_embedder", lambda model: embedder)
    first = embedding_cache.embed_cached("m", ["a", "bb"])
    second = embedding_cache.embed_cached("m", ["a", "bb"])
    assert embedder.embedded == 2 and np.array_equal(first, second)
