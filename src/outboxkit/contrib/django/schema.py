"""The outbox and inbox DDL, run by this app's migrations on Django's migration connection.

The statements are the ones ``outboxkit migrate`` (and ``outboxkit migrate --inbox``) runs, asked
from the same place (the database's :class:`~outboxkit.stores.base.OutboxSchema` and inbox SQL),
so the two ways of creating the tables cannot drift apart. The DDL is idempotent ("create or
upgrade"): a later outboxkit release that changes the schema ships a migration running it again.
"""

from __future__ import annotations

from typing import Any

from outboxkit.contrib.django.conf import inbox_ref, outbox_ref, setting
from outboxkit.stores.base import Statement
from outboxkit.stores.registry import database_named


def statements(vendor: str) -> list[Statement]:
    """Outbox then inbox DDL for a Django connection ``vendor`` (``postgresql``, ``sqlite``, ``mysql``)."""
    database = database_named(vendor)
    notify = bool(setting().get("NOTIFY", True))
    return [*database.schema().ddl(outbox_ref(), notify=notify), *database.inbox().ddl(inbox_ref())]


def create_tables(apps: Any, schema_editor: Any) -> None:
    """RunPython step, run on each database ``migrate`` runs on (database routers decide, as
    for any app's models)."""
    conn = schema_editor.connection
    # The raw DB-API cursor: statements carry the driver's own placeholders (? on SQLite), and
    # DDL text must reach the driver untouched (no %-formatting of strftime('%Y...')).
    conn.ensure_connection()
    cursor = conn.connection.cursor()
    try:
        for stmt in statements(conn.vendor):
            if isinstance(stmt, tuple):
                cursor.execute(stmt[0], tuple(stmt[1]))
            else:
                cursor.execute(stmt)
    finally:
        cursor.close()
