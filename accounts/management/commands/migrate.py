"""`migrate`, run in the system scope: the row-level-security guard refuses schema changes anywhere else.

Before migrating it makes sure the guard is in the database (installing it when DATABASE_ADMIN_URL is set, else
failing with instructions), and refreshes existing tables' policies, so data migrations see the rows.
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as MigrateCommand
from django.db import DEFAULT_DB_ALIAS

from accounts import rls
from accounts.tenancy import system_scope


class Command(MigrateCommand):
    def execute(self, *args, **options):
        using = options.get("database") or DEFAULT_DB_ALIAS
        with system_scope():
            try:
                rls.ensure_guard(using)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from exc
            rls.install_policies(using, only_protected=True)
            return super().execute(*args, **options)
