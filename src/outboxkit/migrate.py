"""``outboxkit migrate``: create or upgrade the outbox schema, idempotently."""

from __future__ import annotations

from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for, database_named


def migration_sql(url_or_dialect: str, ref: TableRef, *, notify: bool = True) -> list[str]:
    """The DDL that :func:`migrate` runs, for people who run their own migrations."""
    database = database_for(url_or_dialect) if "://" in url_or_dialect else database_named(url_or_dialect)
    return database.schema().ddl(ref, notify=notify)


def migrate(url: str, ref: TableRef | None = None, *, notify: bool = True) -> int:
    """Run the DDL in one migration, then re-create installed capture triggers with this version's
    SQL (``outboxkit capture``); returns the number of outbox statements run."""
    from outboxkit.capture.triggers import reinstall_captures

    ref = ref or TableRef()
    database = database_for(url)
    statements = database.schema().ddl(ref, notify=notify)
    database.migrate(url, ref, statements)
    reinstall_captures(url, ref)
    return len(statements)
