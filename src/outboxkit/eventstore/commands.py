"""What the ``outboxkit`` event store commands do (``migrate --event-store``, ``streams``,
``projections``): the CLI parses arguments and calls these."""

from __future__ import annotations

from collections.abc import Callable

from outboxkit.errors import ConfigurationError
from outboxkit.eventstore.migrate import DEFAULT_TABLE, event_store_sql_text, migrate_event_store
from outboxkit.stores.base import TableRef

Echo = Callable[[str], object]


def migrate_command(
    db: str | None, table: str | None, schema: str | None, *, sql: bool, dialect: str | None, notify: bool, echo: Echo
) -> str | None:
    """Print the DDL (``--sql``) or run it; returns the line to show after a migration."""
    ref = TableRef(table or DEFAULT_TABLE, schema)
    if sql:
        target = db or dialect
        if not target:
            raise ConfigurationError("--sql needs --db URL or --dialect NAME")
        for stmt in event_store_sql_text(target, ref, notify=notify):
            echo(stmt.rstrip() + ";\n")
        return None
    if not db:
        raise ConfigurationError("no database: pass --db URL or set OUTBOXKIT_DB")
    count = migrate_event_store(db, ref, notify=notify)
    return f"migrated event store {ref.qualified}: {count} statements, schema is up to date"
