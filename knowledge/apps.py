from django.apps import AppConfig

from accounts.signals import demo_tenant_ready
from config import jobs


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, not at the top: Django loads apps.py before any model, and these import models.
        from knowledge.demo import on_demo_tenant_ready
        from knowledge.pipeline import INGEST_JOB
        from knowledge.vectors import UPGRADE_JOB

        demo_tenant_ready.connect(on_demo_tenant_ready, dispatch_uid="knowledge.demo_kb")
        jobs.register(INGEST_JOB)
        jobs.register(UPGRADE_JOB)
