"""Inbox tables on the consumer's database, and their retention. The SQL lives with each database
(``stores/<database>/inbox.py``, an :class:`~outboxkit.stores.base.InboxSql`).

``<table>``: one row per processed (consumer, event id). Its primary key is what makes a duplicate
detectable inside the consumer's own transaction. Rows must outlive the longest redelivery window
of the bus (JetStream's ack_wait and max_deliver, Kafka's retention of uncommitted offsets, a
Redis pending entry, an MQTT persistent session): 7 days by default, far beyond any of them.

``<table>_dead``: messages that failed ``max_attempts`` times, with the error, for a human.
"""

from __future__ import annotations

from datetime import timedelta

from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.registry import database_for, database_named

DEFAULT_RETENTION = timedelta(days=7)
_BATCH = 10_000


def inbox_sql(url_or_dialect: str, ref: TableRef) -> list[str]:
    """The inbox DDL for a database URL or dialect name (``postgresql``, ``sqlite``, ...)."""
    database = database_for(url_or_dialect) if "://" in url_or_dialect else database_named(url_or_dialect)
    return database.inbox().ddl(ref)


def connect_sync(url: str) -> SyncConnection:
    """A sync connection in autocommit mode (transactions are explicit BEGIN/COMMIT)."""
    return database_for(url).connect(url, label="outboxkit-inbox")


def migrate_inbox(url: str, ref: TableRef | None = None) -> None:
    ref = ref or TableRef("inbox")
    database = database_for(url)
    database.migrate(url, ref, database.inbox().ddl(ref))


def cleanup_inbox(url: str, ref: TableRef | None = None, *, older_than: timedelta = DEFAULT_RETENTION) -> int:
    """Delete processed ids older than ``older_than``, in batches of 10,000 (cheap on a big table).

    Never shorten it below the bus's redelivery window: an id deleted too early is processed again
    if its message is redelivered."""
    ref = ref or TableRef("inbox")
    database = database_for(url)
    sql, params = database.inbox().cleanup(ref, older_than, _BATCH)
    conn = database.connect(url, label="outboxkit-inbox")
    total = 0
    try:
        while True:
            deleted = int(conn.execute(sql, params).rowcount)
            total += deleted
            if deleted < _BATCH:
                return total
    finally:
        conn.close()
