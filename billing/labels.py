"""Names for the ids on the ledger, without billing importing the apps above it.

Apps above billing register a resolver once (e.g. in their AppConfig.ready):

    from billing.labels import register_label_resolver
    register_label_resolver("assistant", lambda tenant, ids: dict(
        Assistant.objects.filter(tenant=tenant, pk__in=ids).values_list("pk", "name")))

Kinds used by the usage pages: "assistant", "conversation", "document". API keys and users resolve here.
A resolver runs inside the tenant's scope and returns {id: label} for the ids it knows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from django.utils.translation import gettext as _

from accounts.models import ApiKey, Membership

logger = logging.getLogger(__name__)

Resolver = Callable[[object, list[int]], dict[int, str]]
_resolvers: dict[str, Resolver] = {}


def register_label_resolver(kind: str, resolver: Resolver) -> None:
    _resolvers[kind] = resolver


def _api_keys(tenant, ids: list[int]) -> dict[int, str]:
    return {pk: f"{name} (rdk_{prefix}_…)" for pk, name, prefix in
            ApiKey.objects.filter(tenant=tenant, pk__in=ids).values_list("pk", "name", "prefix")}


def _users(tenant, ids: list[int]) -> dict[int, str]:
    rows = Membership.objects.filter(tenant=tenant, user_id__in=ids).values_list("user_id", "user__name",
                                                                                 "user__email")
    return {pk: name or email for pk, name, email in rows}


_builtin: dict[str, Resolver] = {"api_key": _api_keys, "user": _users}

FALLBACK = {
    "assistant": lambda pk: _("Assistant #%(id)s") % {"id": pk},
    "conversation": lambda pk: _("Conversation #%(id)s") % {"id": pk},
    "document": lambda pk: _("Document #%(id)s") % {"id": pk},
    "api_key": lambda pk: _("API key #%(id)s (deleted)") % {"id": pk},
    "user": lambda pk: _("User #%(id)s") % {"id": pk},
}


def labels_for(kind: str, *, tenant, ids: Iterable[int | None]) -> dict[int | None, str]:
    """{id: label} for every id given; None labels what has no such id (e.g. calls made in the web UI)."""
    wanted = sorted({i for i in ids if i is not None})
    found: dict[int, str] = {}
    resolver = _resolvers.get(kind) or _builtin.get(kind)
    if resolver is not None and wanted:
        try:
            found = resolver(tenant, wanted) or {}
        except Exception:  # a label is never worth failing a usage page for
            logger.exception("label resolver for %s failed", kind)
    labels: dict[int | None, str] = {i: found.get(i) or FALLBACK[kind](i) for i in wanted}
    labels[None] = {
        "assistant": _("No assistant"), "conversation": _("No conversation"), "document": _("No document"),
        "api_key": _("Web app / background"), "user": _("No user"),
    }[kind]
    return labels
