"""``outboxkit migrate --event-store``: create the event store's tables, idempotently."""

from __future__ import annotations

from outboxkit.eventstore.sql import event_store_sql
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for, database_named

#: The event store's default table.
DEFAULT_TABLE = "events"


def event_store_sql_text(url_or_dialect: str, ref: TableRef | None = None, *, notify: bool = True) -> list[str]:
    """The DDL :func:`migrate_event_store` runs, for people who run their own migrations."""
    database = database_for(url_or_dialect) if "://" in url_or_dialect else database_named(url_or_dialect)
    return event_store_sql(database.name).ddl(ref or TableRef(DEFAULT_TABLE), notify=notify)


def migrate_event_store(url: str, ref: TableRef | None = None, *, notify: bool = True) -> int:
    """Create or upgrade the event store table (an outbox table with stream columns), its stream
    heads and its projection checkpoints; returns the number of statements run."""
    ref = ref or TableRef(DEFAULT_TABLE)
    database = database_for(url)
    sql = event_store_sql(database.name)
    statements = sql.ddl(ref, notify=notify)
    sql.upgrade(url, ref)  # a table first created by `outboxkit migrate` gains its stream columns
    database.migrate(url, ref, statements)
    return len(statements)
