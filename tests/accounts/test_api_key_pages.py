"""The API key pages: a new secret is never cached, scopes read in the page's language, revoking works on a
phone."""

import re

import pytest

pytestmark = pytest.mark.django_db


def test_page_showing_a_new_secret_is_not_cached(client_a):
    response = client_a.post("/accounts/settings/api-keys/", {"name": "ci", "scopes": ["read"]})
    assert response.status_code == 200 and "rdk_" in response.context["new_secret"]
    assert "no-store" in response["Cache-Control"]


def test_api_response_with_a_new_secret_is_not_cached(api_a):
    response = api_a.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"]}, format="json")
    assert response.status_code == 201 and response.json()["key"].startswith("rdk_")
    assert "no-store" in response["Cache-Control"]


def test_api_key_list_names_scopes_in_the_page_language(client_a):
    client_a.post("/accounts/settings/api-keys/", {"name": "ci", "scopes": ["write", "read"]})
    page = client_a.get("/accounts/settings/api-keys/", HTTP_ACCEPT_LANGUAGE="ko")
    assert "읽기, 쓰기" in page.content.decode()


def test_revoking_a_key_stays_possible_on_a_phone(client_a):
    """The phone layout hides table columns from the 4th on; the status and revoke cells are kept."""
    client_a.post("/accounts/settings/api-keys/", {"name": "ci", "scopes": ["read"]})
    body = client_a.get("/accounts/settings/api-keys/").content.decode()
    assert re.search(r'<td class="keep">\s*<form method="post" action="/accounts/settings/api-keys/\d+/revoke/"', body)
