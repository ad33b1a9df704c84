from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.tenancy import SYSTEM, TenantScopeMissing, current_scope, system_scope


class Tenant(models.Model):
    class DataPolicy(models.TextChoices):
        ANY = "any", _("Cloud and local models")
        LOCAL_ONLY = "local_only", _("Local models only")

    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=60, unique=True)
    plan = models.CharField(_("plan"), max_length=40, default="free")
    data_policy = models.CharField(
        _("data policy"), max_length=20, choices=DataPolicy.choices, default=DataPolicy.ANY
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def allows_model(self, *, is_local: bool) -> bool:
        """The data policy, the one place it is read: a local-only team's documents and questions go to
        self-hosted models only, never to a cloud provider."""
        return is_local or self.data_policy != self.DataPolicy.LOCAL_ONLY


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra):
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(_("email"), unique=True)
    name = models.CharField(_("name"), max_length=120, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []
    objects = UserManager()

    def __str__(self) -> str:
        return self.email


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    ADMIN = "admin", _("Admin")
    MEMBER = "member", _("Member")


ADMIN_ROLES = (Role.OWNER, Role.ADMIN)


class SystemScopedQuerySet(models.QuerySet):
    """Runs each of its queries in the system scope.

    For rows that code looks up by user before any tenant is in scope (sign-in, the tenant switcher, sign-up,
    invitations): every such ORM query names its user or tenant. Row-level security still confines raw SQL
    running in a tenant's scope to that tenant's rows. (Results are fetched whole, also by iterator().)
    """

    def _fetch_all(self):
        with system_scope():
            super()._fetch_all()

    def _iterator(self, use_chunked_fetch, chunk_size):
        with system_scope():
            rows = list(super()._iterator(False, chunk_size))
        yield from rows

    def count(self):
        with system_scope():
            return super().count()

    def exists(self):
        with system_scope():
            return super().exists()

    def aggregate(self, *args, **kwargs):
        with system_scope():
            return super().aggregate(*args, **kwargs)

    def update(self, **kwargs):
        with system_scope():
            return super().update(**kwargs)

    def _update(self, values):
        with system_scope():
            return super()._update(values)

    def delete(self):
        with system_scope():
            return super().delete()

    def _raw_delete(self, using):
        with system_scope():
            return super()._raw_delete(using)

    def _insert(self, *args, **kwargs):
        with system_scope():
            return super()._insert(*args, **kwargs)


class Membership(models.Model):
    """Links a user to a tenant. Looked up by user (the tenant switcher), so the ORM reads it in the system
    scope (SystemScopedQuerySet); row-level security keeps raw SQL in a tenant's scope to that tenant's rows."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = models.Manager.from_queryset(SystemScopedQuerySet)()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="uniq_membership")]

    # Saves, refreshes and deletes of one row use the base manager or their own queries, not `objects`.
    def save(self, *args, **kwargs):
        with system_scope():
            return super().save(*args, **kwargs)

    def refresh_from_db(self, *args, **kwargs):
        with system_scope():
            return super().refresh_from_db(*args, **kwargs)

    def delete(self, *args, **kwargs):
        with system_scope():
            return super().delete(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES


class TenantQuerySet(models.QuerySet):
    pass


class TenantManager(models.Manager.from_queryset(TenantQuerySet)):
    """Fails closed: no tenant in scope means an error, not every tenant's rows."""

    def get_queryset(self):
        scope = current_scope()
        qs = super().get_queryset()
        if scope is None:
            raise TenantScopeMissing(
                f"{self.model.__name__} queried with no tenant in scope; "
                "wrap the code in tenant_scope(tenant) or system_scope()"
            )
        if scope is SYSTEM:
            return qs
        return qs.filter(tenant_id=scope.pk)


class TenantModel(models.Model):
    """Base of every tenant-owned model. Row-level security policies are installed for each subclass."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)

    objects = TenantManager()
    # Explicitly unscoped access for code that has already established the tenant some other way
    # (API-key lookup, RLS still applies underneath).
    all_tenants = models.Manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.tenant_id is None:
            scope = current_scope()
            if scope is None or scope is SYSTEM:
                raise TenantScopeMissing(f"{type(self).__name__} saved without a tenant")
            self.tenant = scope
        super().save(*args, **kwargs)


class Invitation(TenantModel):
    email = models.EmailField(_("email"))
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} -> {self.tenant_id} ({self.role})"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.expires_at > timezone.now()


class ApiKey(TenantModel):
    class Scope(models.TextChoices):
        READ = "read", _("Read")
        WRITE = "write", _("Write")
        CHAT = "chat", _("Chat")
        ADMIN = "admin", _("Admin")

    PREFIX = "rdk"

    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.PREFIX}_{self.prefix}_…)"

    @staticmethod
    def hash_secret(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    @classmethod
    def generate(cls) -> tuple[str, str]:
        """Return (prefix, raw_key). The raw key is shown once and never stored."""
        prefix = secrets.token_hex(6)
        return prefix, f"{cls.PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"

    @property
    def is_active(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def scope_labels(self) -> list[str]:
        """The scopes in the page's language, in the order read, write, chat, admin."""
        return [str(label) for value, label in self.Scope.choices if value in self.scopes]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or self.Scope.ADMIN in self.scopes
