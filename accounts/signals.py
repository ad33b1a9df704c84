from django.dispatch import Signal

# Sent by `manage.py seed_demo` with `tenant` and `owner` once the demo tenant exists, so other apps can add
# their sample data (a knowledge base, an assistant) without accounts depending on them.
demo_tenant_ready = Signal()
