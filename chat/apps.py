from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing.labels import register_label_resolver
        from chat import receivers  # noqa: F401  (signal receivers)

        register_label_resolver("assistant", _assistant_names)
        register_label_resolver("conversation", _conversation_titles)


def _assistant_names(tenant, ids):
    from chat.models import Assistant

    return dict(Assistant.objects.filter(tenant=tenant, pk__in=ids).values_list("pk", "name"))


def _conversation_titles(tenant, ids):
    from chat.models import Conversation

    rows = Conversation.objects.filter(tenant=tenant, pk__in=ids).values_list("pk", "title")
    return {pk: title for pk, title in rows if title}
