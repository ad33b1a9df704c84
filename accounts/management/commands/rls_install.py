"""Install (or update) the row-level-security guard in the database, as a superuser.

    DATABASE_ADMIN_URL=postgres://postgres@db/postgres python manage.py rls_install

The app role cannot install it: the guard is what the app role must not be able to change
(config/dbbackend/guard.py). scripts/postgres_redis.py does this itself for its embedded PostgreSQL.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from accounts import rls


class Command(BaseCommand):
    help = "Install the row-level-security guard with a superuser connection (DATABASE_ADMIN_URL)."
    requires_system_checks = []  # the database check would fail for the very reason this command exists

    def add_arguments(self, parser):
        parser.add_argument("--admin-url", default=settings.DATABASE_ADMIN_URL,
                            help="superuser URL on the same server (default: DATABASE_ADMIN_URL)")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, admin_url: str, database: str, **options):
        if not admin_url:
            raise CommandError("Set DATABASE_ADMIN_URL (or --admin-url) to a superuser URL on the same server.")
        changed = rls.install_guard(admin_url, database)
        problem = rls.guard_problem(database)
        if problem:
            raise CommandError(f"Row-level security: {problem}.")
        self.stdout.write("Guard installed." if changed else "Guard already current.")
        self.stdout.write(f"Policies refreshed on {rls.install_policies(database)} table(s).")
