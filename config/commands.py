"""Management commands that need the database schema check for it first: on a database that was never migrated
(or is behind) they stop with what to run, instead of a raw `relation ... does not exist` halfway through."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from django.db.migrations.executor import MigrationExecutor


def require_migrated(alias: str = DEFAULT_DB_ALIAS) -> None:
    """CommandError unless every migration is applied to the database `alias`."""
    connection = connections[alias]
    name = connection.settings_dict.get("NAME")
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except OperationalError as exc:
        raise CommandError(f"Cannot reach the database {name!r}: {exc}".strip()) from exc
    if pending:
        raise CommandError(
            f"The database {name!r} is not migrated ({len(pending)} migrations not applied). "
            "Run `python manage.py migrate` first (`scripts/env-run python manage.py migrate` in a checkout)."
        )


class SchemaCommand(BaseCommand):
    """A BaseCommand that refuses to start on a database whose schema is missing or behind."""

    def execute(self, *args, **options):
        require_migrated(options.get("database") or DEFAULT_DB_ALIAS)
        return super().execute(*args, **options)
