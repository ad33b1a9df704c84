from django.db.models import Model, QuerySet
from django.http import Http404

from accounts.models import ApiKey, Invitation, Membership, Tenant, User


def tenant_objects(model: type[Model], *, tenant: Tenant) -> QuerySet:
    """A tenant-owned model's rows for `tenant` (the scoped manager also checks the scope agrees)."""
    return model.objects.filter(tenant=tenant)


def tenant_object_or_404(model: type[Model], *, tenant: Tenant, **lookup) -> Model:
    """One object of `tenant`; "missing" and "another tenant's" are the same 404."""
    try:
        return tenant_objects(model, tenant=tenant).get(**lookup)
    except (model.DoesNotExist, ValueError, TypeError) as exc:  # ValueError/TypeError: malformed ids
        raise Http404(f"No {model._meta.verbose_name} matches the given query.") from exc


def membership_for_session(*, user: User, tenant_id) -> Membership | None:
    """The membership for the session's tenant, or the user's first one when that is gone."""
    memberships = Membership.objects.select_related("tenant").filter(user=user).order_by("created_at")
    if tenant_id is not None:
        chosen = memberships.filter(tenant_id=tenant_id).first()
        if chosen is not None:
            return chosen
    return memberships.first()


def membership_list_for_user(*, user: User) -> QuerySet:
    return Membership.objects.select_related("tenant").filter(user=user).order_by("tenant__name")


def membership_list(*, tenant: Tenant) -> QuerySet:
    return Membership.objects.select_related("user").filter(tenant=tenant).order_by("created_at")


def membership_get(*, tenant: Tenant, membership_id) -> Membership:
    try:
        return Membership.objects.select_related("user").get(tenant=tenant, pk=membership_id)
    except (Membership.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404("No membership matches the given query.") from exc


def invitation_list(*, tenant: Tenant) -> QuerySet:
    return tenant_objects(Invitation, tenant=tenant).filter(accepted_at__isnull=True)


def api_key_list(*, tenant: Tenant) -> QuerySet:
    return tenant_objects(ApiKey, tenant=tenant).select_related("created_by")


def api_key_get(*, tenant: Tenant, key_id) -> ApiKey:
    return tenant_object_or_404(ApiKey, tenant=tenant, pk=key_id)
