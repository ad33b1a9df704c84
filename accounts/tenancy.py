"""The current tenant scope of this request, task or command.

A context variable holds one of three states: a tenant, SYSTEM (staff tools and cross-tenant maintenance
jobs), or nothing. Tenant-owned managers refuse to query with nothing in scope, and the database backend
mirrors the scope, signed, into the Postgres settings that row-level security policies read (accounts/rls.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accounts.models import Tenant


class TenantScopeMissing(RuntimeError):
    """A tenant-owned model was queried with no tenant in scope."""


class _System:
    def __repr__(self) -> str:
        return "SYSTEM"


SYSTEM = _System()
_scope: ContextVar[Tenant | _System | None] = ContextVar("ragdesk_tenant_scope", default=None)


def current_scope() -> Tenant | _System | None:
    return _scope.get()


def current_tenant() -> Tenant | None:
    scope = _scope.get()
    return None if scope is None or scope is SYSTEM else scope


def set_scope(value: Tenant | _System | None):
    """Set the scope and return a token for `reset_scope`; prefer the context managers below."""
    return _scope.set(value)


def reset_scope(token) -> None:
    _scope.reset(token)


@contextmanager
def tenant_scope(tenant: Tenant):
    if tenant is None:
        raise ValueError("tenant_scope needs a tenant; use system_scope() for cross-tenant work")
    token = _scope.set(tenant)
    try:
        yield tenant
    finally:
        _scope.reset(token)


@contextmanager
def system_scope():
    token = _scope.set(SYSTEM)
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def no_scope():
    token = _scope.set(None)
    try:
        yield
    finally:
        _scope.reset(token)


def rls_scope() -> str:
    """The scope as the database reads it from `app.scope`: 'system', 'tenant:<id>', or '' (nothing).
    The database backend sends it signed (config/dbbackend/base.py); policies ignore an unsigned one."""
    scope = _scope.get()
    if scope is SYSTEM:
        return "system"
    if scope is None or scope.pk is None:
        return ""
    return f"tenant:{int(scope.pk)}"
