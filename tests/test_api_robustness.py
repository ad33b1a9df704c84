"""Caller mistakes never produce a 500: every API route gets malformed bodies from a valid key."""

import pytest

from accounts.tenancy import tenant_scope
from tests.crosstenant import BUILDERS
from tests.test_cross_tenant import _fill, object_routes

BAD_BODIES = [
    ("not json at all", "application/json"),
    ("[1, 2, 3]", "application/json"),
    ('{"k": "many", "query": 5, "name": [], "messages": "hi", "scopes": {}, "stream": "yes"}', "application/json"),
    ("\xff\xfe garbage", "text/plain"),
]


def api_routes():
    from django.urls import get_resolver

    from tests.test_cross_tenant import _walk

    return sorted({route for route, _p in _walk(get_resolver()) if route.startswith("api/v1/")})


@pytest.mark.django_db
@pytest.mark.parametrize("route", api_routes())
def test_malformed_requests_get_a_4xx(route, tenant_a, api_a):
    patterns = dict(object_routes())
    values = {}
    if route in patterns:
        with tenant_scope(tenant_a.tenant):
            values = {p: BUILDERS[p](tenant_a) for p in patterns[route].pattern.converters if p in BUILDERS}
    url = _fill(route, values)
    for method in ("post", "put", "patch"):
        for body, content_type in BAD_BODIES:
            response = getattr(api_a, method)(url, data=body, content_type=content_type)
            assert response.status_code < 500, f"{method.upper()} {url} {body!r} -> {response.status_code}"
    response = api_a.get(url + "?limit=-5&offset=abc&period=never&group_by=../../etc")
    assert response.status_code < 500, f"GET {url} with odd query -> {response.status_code}"
