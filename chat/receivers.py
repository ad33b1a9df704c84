"""Sample data for the demo tenant: a default assistant over the tenant's knowledge bases."""

from django.dispatch import receiver

from accounts.signals import demo_tenant_ready


@receiver(demo_tenant_ready)
def create_demo_assistant(sender, tenant, owner, **kwargs):
    from chat.services import assistant_ensure_default

    # No knowledge bases are linked: an assistant without links answers from all of the tenant's, so it
    # works whether the sample knowledge base was created before or after this receiver ran.
    assistant_ensure_default(tenant=tenant, created_by=owner)
