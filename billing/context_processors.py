from django.utils.functional import SimpleLazyObject

from billing import selectors


def usage_banner(request):
    """`usage_banner` for templates/billing/_banner.html: the 80% / 100% plan notice, for tenant admins only.
    Lazy, so pages that don't show the banner block don't query."""
    membership = getattr(request, "membership", None)
    tenant = getattr(request, "tenant", None)
    if tenant is None or membership is None or not membership.is_admin:
        return {}

    def banner():
        # A usage page has just computed the allowance: reuse it.
        return selectors.usage_banner(tenant=tenant, allowance=getattr(request, "billing_allowance", None))

    return {"usage_banner": SimpleLazyObject(banner)}
