from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, not at the top: Django loads apps.py before any model, and these import models.
        from billing.labels import register_label_resolver
        from chat import receivers
        from chat.answer_jobs import ANSWER_JOB
        from config import jobs

        jobs.register(ANSWER_JOB)
        register_label_resolver("assistant", receivers.assistant_names)
        register_label_resolver("conversation", receivers.conversation_titles)
