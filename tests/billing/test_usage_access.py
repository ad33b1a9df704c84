"""Members who may not open the usage page are not offered it."""

import pytest

from tests.conftest import web_client

pytestmark = pytest.mark.django_db


def test_usage_is_not_offered_to_members_who_cannot_open_it(tenant_a):
    member = web_client(tenant_a.member, tenant_a.tenant)
    assert member.get("/usage/").status_code == 403
    home = member.get("/").content.decode()
    assert 'href="/usage/"' not in home
    assert 'href="/usage/"' in web_client(tenant_a.admin, tenant_a.tenant).get("/").content.decode()
