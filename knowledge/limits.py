"""How many chunks a document may make and a team may hold, and the refusals the pipeline records.

Two sources, the lower one wins: the tenant's plan (billing.Plan.max_chunks_per_document / _per_tenant) and the
installation's ceilings for everyone (INGEST_MAX_CHUNKS_PER_DOCUMENT / _PER_TENANT; 0 = none).

The pipeline checks them as early as it can: right after parsing, against a lower bound of the chunk count
(every chunk covers at most `chunk_size` characters of the text), so a 50 MB file is refused in seconds;
after chunking, against the exact count; and the team total once more under a per-tenant lock at the moment
the document's chunks are reserved (status "embedding"), so two documents processed at once cannot both take
the last of the allowance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils.translation import gettext as _

from accounts.models import Tenant
from billing.selectors import plan_for
from knowledge import degenerate
from knowledge.parsers.base import ParsedDocument, ParseError
from knowledge.selectors import chunk_usage

TENANT_LOCK = 0x6B636E74  # pg advisory lock class: one chunk reservation per tenant at a time


class Refused(ParseError):
    """A document refused by a limit or as degenerate input. The message carries the figures (shown as is)."""


@dataclass(frozen=True)
class ChunkLimits:
    per_document: int | None
    per_tenant: int | None
    plan_name: str = ""
    document_from_plan: bool = False  # the per-document limit is the plan's (else the installation's)
    tenant_from_plan: bool = False


def _lower(plan_value, ceiling) -> tuple[int | None, bool]:
    ceiling = int(ceiling or 0) or None
    if plan_value is not None and (ceiling is None or plan_value <= ceiling):
        return int(plan_value), True
    return ceiling, False


def chunk_limits(*, tenant: Tenant) -> ChunkLimits:
    plan = plan_for(tenant=tenant)
    per_document, document_from_plan = _lower(
        plan and plan.max_chunks_per_document, settings.INGEST_MAX_CHUNKS_PER_DOCUMENT)
    per_tenant, tenant_from_plan = _lower(
        plan and plan.max_chunks_per_tenant, settings.INGEST_MAX_CHUNKS_PER_TENANT)
    return ChunkLimits(per_document, per_tenant, plan.name if plan else "", document_from_plan, tenant_from_plan)


_WHITESPACE = [c for c in map(chr, range(0x3001)) if c.isspace()]  # every Unicode space is below U+3001


def minimum_chunks(parsed: ParsedDocument, chunk_size: int) -> int:
    """A count the chunker cannot go below: every visible character of the text (a table's rows; its header is
    repeated, not split) is in some chunk, and no chunk spans more than `chunk_size` characters. Spaces are not
    counted: runs of blank lines are trimmed away between chunks."""
    text = parsed.text
    visible = len(text) - sum(text.count(c) for c in _WHITESPACE)  # str.count: ~0.3 s for 50 MB
    if parsed.kind == "table" and parsed.header:
        visible -= parsed.header[1] - parsed.header[0]
    return math.ceil(max(visible, 0) / max(chunk_size, 1))


def _whose(limits: ChunkLimits, from_plan: bool) -> str:
    if from_plan and limits.plan_name:
        return _("the %(plan)s plan allows") % {"plan": limits.plan_name}
    return _("this installation allows")


def check_document(limits: ChunkLimits, chunks: int, *, estimate: bool = False) -> None:
    if limits.per_document is None or chunks <= limits.per_document:
        return
    counted = _("at least %(n)s") % {"n": f"{chunks:,}"} if estimate else f"{chunks:,}"
    raise Refused(_(
        "This document would make %(counted)s chunks, more than the %(limit)s per document that %(whose)s. "
        "Split it into smaller files, or move to a plan with a higher limit."
    ) % {"counted": counted, "limit": f"{limits.per_document:,}",
         "whose": _whose(limits, limits.document_from_plan)})


def check_tenant(limits: ChunkLimits, chunks: int, used: int, *, estimate: bool = False) -> None:
    if limits.per_tenant is None or used + chunks <= limits.per_tenant:
        return
    counted = _("at least %(n)s") % {"n": f"{chunks:,}"} if estimate else f"{chunks:,}"
    raise Refused(_(
        "This document would add %(counted)s chunks to the %(used)s your team already has, more than the "
        "%(limit)s chunks in total that %(whose)s. Delete documents you no longer need, or move to a plan with "
        "a higher limit."
    ) % {"counted": counted, "used": f"{used:,}", "limit": f"{limits.per_tenant:,}",
         "whose": _whose(limits, limits.tenant_from_plan)})


def lock_tenant(tenant: Tenant) -> None:
    """Serialise chunk reservations of one tenant until the end of the current transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [TENANT_LOCK, tenant.pk & 0x7FFFFFFF])


def check_parsed(*, tenant: Tenant, document_id: int, parsed: ParsedDocument, kb) -> ChunkLimits:
    """Right after parsing: degenerate text, then the limits against the fewest chunks this text can make.
    Returns the limits, for the exact checks once the text is chunked."""
    refusal = degenerate.reason(parsed, chunk_size=kb.chunk_size, chunk_overlap=kb.chunk_overlap)
    if refusal:
        raise Refused(refusal)
    allowed = chunk_limits(tenant=tenant)
    least = minimum_chunks(parsed, kb.chunk_size)
    check_document(allowed, least, estimate=True)
    if allowed.per_tenant is not None:
        check_tenant(allowed, least, chunk_usage(tenant=tenant, exclude_document_id=document_id), estimate=True)
    return allowed


def reserve(*, tenant: Tenant, document_id: int, allowed: ChunkLimits, chunks: int) -> None:
    """The exact team total, first thing in the transaction that records the document's chunk count: until it
    commits, no other document of the tenant can count or reserve (lock order: tenant, then document)."""
    if allowed.per_tenant is None:
        return
    lock_tenant(tenant)
    check_tenant(allowed, chunks, chunk_usage(tenant=tenant, exclude_document_id=document_id))
