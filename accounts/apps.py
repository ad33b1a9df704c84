from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # In ready(): accounts.rls imports accounts.models, which Django loads only after every apps.py.
        from accounts.rls import install_policies_after_migrate

        post_migrate.connect(install_policies_after_migrate, dispatch_uid="accounts.rls")
