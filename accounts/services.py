import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from accounts.models import ApiKey, Invitation, Membership, Role, Tenant, User
from accounts.selectors import api_key_get, membership_get, tenant_object_or_404
from accounts.tenancy import system_scope, tenant_scope


def _unique_slug(name: str) -> str:
    base = slugify(name, allow_unicode=False)[:50] or "team"
    slug, n = base, 1
    while Tenant.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def tenant_create(*, name: str, owner: User, plan: str = "free") -> Tenant:
    tenant = Tenant.objects.create(name=name.strip(), slug=_unique_slug(name), plan=plan)
    Membership.objects.create(user=owner, tenant=tenant, role=Role.OWNER)
    return tenant


@transaction.atomic
def user_signup(*, email: str, password: str, tenant_name: str, name: str = "") -> tuple[User, Tenant]:
    email = email.strip().lower()
    if User.objects.filter(email=email).exists():
        raise ValidationError({"email": _("An account with this email already exists.")})
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, password=password, name=name.strip())
    except IntegrityError as exc:  # a concurrent sign-up with the same email won the race
        raise ValidationError({"email": _("An account with this email already exists.")}) from exc
    return user, tenant_create(name=tenant_name, owner=user)


def tenant_update_policy(*, tenant: Tenant, data_policy: str) -> Tenant:
    if data_policy not in Tenant.DataPolicy.values:
        raise ValidationError({"data_policy": _("Unknown data policy.")})
    tenant.data_policy = data_policy
    tenant.save(update_fields=["data_policy"])
    return tenant


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def invitation_create(
    *, tenant: Tenant, invited_by: User, email: str, role: str, actor: Membership | None = None
) -> tuple[Invitation, str]:
    """`actor`: the inviter's membership, when a person invites (only an owner may invite an owner)."""
    email = email.strip().lower()
    if role not in Role.values:
        raise ValidationError({"role": _("Unknown role.")})
    if role == Role.OWNER and actor is not None and actor.role != Role.OWNER:
        raise PermissionDenied(_("Only an owner can grant or take away the owner role."))
    if Membership.objects.filter(tenant=tenant, user__email=email).exists():
        raise ValidationError({"email": _("This person is already a member.")})
    raw = secrets.token_urlsafe(32)
    with tenant_scope(tenant):
        invitation = Invitation.objects.create(
            tenant=tenant, email=email, role=role, token_hash=_token_hash(raw), invited_by=invited_by,
            expires_at=timezone.now() + timedelta(hours=settings.INVITATION_TTL_HOURS),
        )
    link = settings.SITE_URL.rstrip("/") + reverse("accounts:invitation-accept", args=[raw])
    send_mail(
        subject=_("You are invited to %(tenant)s on ragdesk") % {"tenant": tenant.name},
        message=_("%(who)s invited you to join %(tenant)s. Accept within %(hours)s hours: %(link)s")
        % {"who": invited_by.email, "tenant": tenant.name, "hours": settings.INVITATION_TTL_HOURS, "link": link},
        from_email=None,
        recipient_list=[email],
    )
    return invitation, raw


def invitation_by_token(*, raw_token: str) -> Invitation | None:
    with system_scope():
        invitation = Invitation.all_tenants.select_related("tenant").filter(token_hash=_token_hash(raw_token)).first()
    return invitation if invitation is not None and invitation.is_pending else None


@transaction.atomic
def invitation_accept(*, raw_token: str, user: User) -> Membership:
    invitation = invitation_by_token(raw_token=raw_token)
    if invitation is None:
        raise ValidationError(_("This invitation is invalid or has expired."))
    if user.email.lower() != invitation.email.lower():
        # The link is a secret mailed to one address; a forwarded or leaked link must not let anyone in.
        raise ValidationError(_("This invitation was sent to another email address."))
    try:
        with transaction.atomic():
            membership = Membership.objects.create(user=user, tenant=invitation.tenant, role=invitation.role)
    except IntegrityError:
        membership = Membership.objects.get(user=user, tenant=invitation.tenant)
    with tenant_scope(invitation.tenant):
        Invitation.objects.filter(pk=invitation.pk).update(accepted_at=timezone.now())
    return membership


@transaction.atomic
def user_signup_via_invitation(*, raw_token: str, password: str, name: str = "") -> tuple[User, Membership]:
    """A newcomer joins the inviting team directly (no organisation of their own is created)."""
    invitation = invitation_by_token(raw_token=raw_token)
    if invitation is None:
        raise ValidationError(_("This invitation is invalid or has expired."))
    if User.objects.filter(email=invitation.email).exists():
        raise ValidationError({"email": _("An account with this email already exists. Sign in to accept.")})
    user = User.objects.create_user(email=invitation.email, password=password, name=name.strip())
    return user, invitation_accept(raw_token=raw_token, user=user)


def invitation_revoke(*, tenant: Tenant, invitation_id) -> None:
    with tenant_scope(tenant):
        tenant_object_or_404(Invitation, tenant=tenant, pk=invitation_id).delete()


def _owner_count(tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role=Role.OWNER).count()


@transaction.atomic
def membership_change_role(*, tenant: Tenant, membership_id, role: str, actor: Membership) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": _("Unknown role.")})
    membership = membership_get(tenant=tenant, membership_id=membership_id)
    if Role.OWNER in (role, membership.role) and actor.role != Role.OWNER:
        raise PermissionDenied(_("Only an owner can grant or take away the owner role."))
    # Lock the tenant's owners so two concurrent demotions can't both pass the last-owner check.
    list(Membership.objects.select_for_update().filter(tenant=tenant, role=Role.OWNER))
    if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(tenant) <= 1:
        raise ValidationError(_("A team needs at least one owner."))
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, tenant: Tenant, membership_id, actor: Membership) -> None:
    membership = membership_get(tenant=tenant, membership_id=membership_id)
    if membership.role == Role.OWNER and actor.role != Role.OWNER:
        raise PermissionDenied(_("Only an owner can remove an owner."))
    list(Membership.objects.select_for_update().filter(tenant=tenant, role=Role.OWNER))
    if membership.role == Role.OWNER and _owner_count(tenant) <= 1:
        raise ValidationError(_("The last owner can't be removed."))
    membership.delete()


def api_key_create(
    *, tenant: Tenant, name: str, scopes: list[str], created_by: User | None = None, expires_at=None
) -> tuple[ApiKey, str]:
    """Create a key; the raw secret is returned once and only its hash is kept."""
    scopes = sorted(set(scopes))
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if not scopes or unknown:
        raise ValidationError({"scopes": _("Choose one or more of: read, write, chat, admin.")})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": _("The expiry must be in the future.")})
    if not name.strip():
        raise ValidationError({"name": _("Give the key a name.")})
    prefix, raw = ApiKey.generate()
    with tenant_scope(tenant):
        key = ApiKey.objects.create(
            tenant=tenant, name=name.strip(), prefix=prefix, key_hash=ApiKey.hash_secret(raw),
            scopes=scopes, created_by=created_by, expires_at=expires_at,
        )
    return key, raw


def api_key_revoke(*, tenant: Tenant, key_id) -> ApiKey:
    with tenant_scope(tenant):
        key = api_key_get(tenant=tenant, key_id=key_id)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
    return key
