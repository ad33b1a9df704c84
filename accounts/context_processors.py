def tenancy(request):
    membership = getattr(request, "membership", None)
    return {
        "tenant": getattr(request, "tenant", None),
        "membership": membership,
        "is_tenant_admin": bool(membership and membership.is_admin),
    }
