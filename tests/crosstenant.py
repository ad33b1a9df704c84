"""Builders for the cross-tenant route walk (tests/test_cross_tenant.py).

Every URL parameter that names an object (`<int:kb_id>`, `<str:token>`...) needs a builder here that
creates such an object for a tenant and returns the value to put in the URL. The walk fails on a route whose
parameter has no builder, so a new route can't slip past the check. Builders run inside the tenant's scope.
"""

from collections.abc import Callable
from types import SimpleNamespace

from accounts.models import Membership

BUILDERS: dict[str, Callable[[SimpleNamespace], object]] = {}


def builder(*names: str):
    def register(fn):
        for name in names:
            BUILDERS[name] = fn
        return fn

    return register


@builder("key_id")
def _api_key(team):
    from accounts.services import api_key_create

    key, _raw = api_key_create(tenant=team.tenant, name="victim key", scopes=["read"])
    return key.pk


@builder("membership_id")
def _membership(team):
    return Membership.objects.get(tenant=team.tenant, user=team.member).pk


@builder("invitation_id")
def _invitation(team):
    from accounts.services import invitation_create

    invitation, _raw = invitation_create(
        tenant=team.tenant, invited_by=team.owner, email="victim-invite@example.com", role="member"
    )
    return invitation.pk


# Parameters that are not object ids of a tenant (secrets that identify themselves, language codes...).
NOT_OBJECT_IDS = {"token"}
