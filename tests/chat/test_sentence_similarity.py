"""The dense similarity extractive answers quote with (chat.retrieval.sentence_similarity)."""

from types import SimpleNamespace

import numpy as np
import pytest

from accounts.tenancy import tenant_scope
from chat.retrieval import sentence_similarity
from knowledge.embeddings import get_embedder
from tests.factories.knowledge import make_kb

pytestmark = pytest.mark.django_db

QUESTION = "How many days do I have for a refund?"
SENTENCES = ["Refunds are possible within 30 days of purchase.", "Our office is in Seoul."]


def _use_cosines():
    use = get_embedder("use-multilingual")
    vectors = np.asarray(use.embed_documents(SENTENCES), dtype=np.float32)
    query = np.asarray(use.embed_query(QUESTION), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors @ (query / np.linalg.norm(query))


@pytest.mark.parametrize("model", ["multilingual-e5-small", "openai:text-embedding-3-small"])
def test_a_slow_or_paid_kb_model_quotes_with_multilingual_use(scope_a, model):
    kb = make_kb(scope_a.tenant, embedding_model=model)
    similarity = sentence_similarity(tenant=scope_a.tenant, hits=[SimpleNamespace(kb_id=kb.pk)])

    cosines = similarity(QUESTION, SENTENCES)

    np.testing.assert_allclose(cosines, _use_cosines(), atol=1e-5)
    assert cosines[0] > cosines[1]


def test_another_tenants_kb_gives_no_similarity(scope_a, tenant_b):
    with tenant_scope(tenant_b.tenant):
        kb = make_kb(tenant_b.tenant, embedding_model="use-multilingual")
    assert sentence_similarity(tenant=scope_a.tenant, hits=[SimpleNamespace(kb_id=kb.pk)]) is None
