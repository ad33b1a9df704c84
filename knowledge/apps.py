from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from accounts.signals import demo_tenant_ready
        from knowledge.demo import on_demo_tenant_ready

        demo_tenant_ready.connect(on_demo_tenant_ready, dispatch_uid="knowledge.demo_kb")
