"""Walk every registered route that takes an object id and prove tenant B gets 404 for tenant A's objects."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.tenancy import tenant_scope
from tests.conftest import api_client, web_client
from tests.crosstenant import BUILDERS, NOT_OBJECT_IDS

METHODS = ["get", "post", "put", "patch", "delete"]
SKIP_PREFIXES = ("admin/",)  # staff-only, system scope by design


def _walk(resolver, prefix=""):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def object_routes():
    routes = []
    for route, pattern in _walk(get_resolver()):
        params = set(pattern.pattern.converters)
        if not params or route.startswith(SKIP_PREFIXES) or params <= NOT_OBJECT_IDS:
            continue
        routes.append((route, pattern))
    return routes


def _fill(route: str, values: dict) -> str:
    import re

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), route).lstrip("^").rstrip("$")


def test_every_object_route_has_a_builder():
    missing = {
        (route, param)
        for route, pattern in object_routes()
        for param in pattern.pattern.converters
        if param not in BUILDERS and param not in NOT_OBJECT_IDS
    }
    assert not missing, f"add builders to tests/crosstenant.py for: {sorted(missing)}"


@pytest.mark.django_db
@pytest.mark.parametrize("route", [r for r, _p in object_routes()])
def test_other_tenant_gets_404(route, tenant_a, tenant_b):
    pattern = dict(object_routes())[route]
    with tenant_scope(tenant_a.tenant):
        values = {p: BUILDERS[p](tenant_a) for p in pattern.pattern.converters if p in BUILDERS}
    url = _fill(route, values)
    if route.startswith("api/"):
        intruder, owner = api_client(tenant_b.api_key), api_client(tenant_a.api_key)
    else:
        intruder, owner = web_client(tenant_b.owner, tenant_b.tenant), web_client(tenant_a.owner, tenant_a.tenant)
    allowed = []
    for method in METHODS:
        response = getattr(intruder, method)(url)
        assert response.status_code in (404, 405), f"{method.upper()} {url} as tenant B -> {response.status_code}"
        if response.status_code == 404:
            allowed.append(method)
    assert allowed, f"{url}: no method reached the view"
    # The object really exists for its own tenant: the 404 above is about ownership, not a bad URL.
    if "get" in allowed:
        assert owner.get(url).status_code != 404, f"GET {url} as tenant A -> 404: builder or route is wrong"
