"""Refused and missing pages keep the app's layout (navigation included)."""

import pytest

from tests.conftest import web_client

pytestmark = pytest.mark.django_db


def test_refused_page_keeps_the_app_layout(tenant_a):
    """A member who follows an old link to /usage/ gets a page with the navigation, not a bare "403 Forbidden"."""
    response = web_client(tenant_a.member, tenant_a.tenant).get("/usage/")
    body = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in body and "admin" in body.lower()


def test_missing_page_keeps_the_app_layout(client_a):
    response = client_a.get("/knowledge/987654/")
    assert response.status_code == 404 and 'class="topbar"' in response.content.decode()


@pytest.mark.parametrize("debug", [True, False])
def test_an_unknown_api_path_answers_json_404_even_under_debug(client, settings, debug):
    settings.DEBUG = debug
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"
