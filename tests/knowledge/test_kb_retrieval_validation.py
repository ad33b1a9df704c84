"""A knowledge base's `retrieval` settings must be an object, through the API and the services."""

import pytest
from django.core.exceptions import ValidationError

from knowledge import services
from tests.factories.knowledge import make_kb

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", [[1, 2], "hybrid", 5])
def test_retrieval_settings_must_be_an_object(api_a, value):
    """A list or string stored as `retrieval` later broke every search of the KB (settings_for calls .items())."""
    created = api_a.post("/api/v1/knowledge-bases", {"name": "R", "retrieval": value}, format="json")
    assert created.status_code == 400 and "retrieval" in created.json()["error"]["fields"]
    kb_id = api_a.post("/api/v1/knowledge-bases", {"name": "R"}, format="json").json()["id"]
    patched = api_a.patch(f"/api/v1/knowledge-bases/{kb_id}", {"retrieval": value}, format="json")
    assert patched.status_code == 400 and "retrieval" in patched.json()["error"]["fields"]
    assert api_a.get(f"/api/v1/knowledge-bases/{kb_id}").json()["retrieval"] == {}


def test_kb_services_refuse_non_object_retrieval(tenant_a):
    with pytest.raises(ValidationError):
        make_kb(tenant_a.tenant, name="bad", retrieval=["x"])
    kb = make_kb(tenant_a.tenant, name="good", retrieval={"mode": "bm25"})
    with pytest.raises(ValidationError):
        services.kb_update(tenant=tenant_a.tenant, kb=kb, retrieval="bm25")
