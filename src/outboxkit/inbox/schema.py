"""Inbox tables on the consumer's database (PostgreSQL, SQLite), and their retention.

``<table>``: one row per processed (consumer, event id). Its primary key is what makes a duplicate
detectable inside the consumer's own transaction. Rows must outlive the longest redelivery window
of the bus (JetStream's ack_wait and max_deliver, Kafka's retention of uncommitted offsets, a
Redis pending entry, an MQTT persistent session): 7 days by default, far beyond any of them.

``<table>_dead``: messages that failed ``max_attempts`` times, with the error, for a human.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

from outboxkit.core.urls import redact_url, scheme_of
from outboxkit.errors import ConfigurationError, UnavailableError
from outboxkit.stores.base import TableRef

DEFAULT_RETENTION = timedelta(days=7)


def inbox_sql(dialect: str, ref: TableRef) -> list[str]:
    t, dead = ref.qualified, ref.derived("dead")
    if dialect == "sqlite":
        if ref.schema:
            raise ConfigurationError("SQLite has no schemas; leave schema unset")
        ts, blob, now = "TEXT", "BLOB", "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
        stmts = []
    else:
        ts, blob, now = "timestamptz", "bytea", "now()"
        stmts = [f'CREATE SCHEMA IF NOT EXISTS "{ref.schema}"'] if ref.schema else []
    return [
        *stmts,
        f"""CREATE TABLE IF NOT EXISTS {t} (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at {ts} NOT NULL DEFAULT {now},
    PRIMARY KEY (consumer, event_id)
)""",
        f"CREATE INDEX IF NOT EXISTS {ref.index_name('processed_at')} ON {t} (processed_at)",
        f"""CREATE TABLE IF NOT EXISTS {dead} (
    consumer  text NOT NULL,
    event_id  text NOT NULL,
    topic     text NOT NULL,
    key       text,
    payload   {blob} NOT NULL,
    headers   text NOT NULL,
    error     text NOT NULL,
    attempts  integer NOT NULL,
    failed_at {ts} NOT NULL DEFAULT {now},
    PRIMARY KEY (consumer, event_id)
)""",
    ]


def _dialect(url: str) -> str:
    scheme = scheme_of(url)
    if scheme == "sqlite":
        return "sqlite"
    if scheme.startswith("postgres"):
        return "postgresql"
    raise ConfigurationError(f"unsupported inbox database {redact_url(url)!r}: use postgresql:// or sqlite:///")


def connect_sync(url: str) -> Any:
    """A sync connection in autocommit mode (transactions are explicit BEGIN/COMMIT)."""
    if _dialect(url) == "sqlite":
        from outboxkit.stores.sqlite import connect, sqlite_path

        return connect(sqlite_path(url), timeout=30)
    import psycopg

    try:
        return psycopg.connect("postgresql://" + url.split("://", 1)[1], autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnavailableError(f"PostgreSQL at {redact_url(url)} is unavailable: {first}") from None


def migrate_inbox(url: str, ref: TableRef | None = None) -> None:
    ref = ref or TableRef("inbox")
    conn = connect_sync(url)
    try:
        conn.execute("BEGIN")
        for stmt in inbox_sql(_dialect(url), ref):
            conn.execute(stmt.encode() if not isinstance(conn, sqlite3.Connection) else stmt)
        conn.execute("COMMIT")
    finally:
        conn.close()


def cleanup_inbox(url: str, ref: TableRef | None = None, *, older_than: timedelta = DEFAULT_RETENTION) -> int:
    """Delete processed ids older than ``older_than``, in batches of 10,000 (cheap on a big table).

    Never shorten it below the bus's redelivery window: an id deleted too early is processed again
    if its message is redelivered."""
    ref = ref or TableRef("inbox")
    conn = connect_sync(url)
    total = 0
    try:
        if isinstance(conn, sqlite3.Connection):
            cutoff = f"strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{int(older_than.total_seconds())} seconds')"
            sql = (
                f"DELETE FROM {ref.qualified} WHERE rowid IN (SELECT rowid FROM {ref.qualified}"
                f" WHERE processed_at < {cutoff} LIMIT 10000)"
            )
            params: tuple[Any, ...] = ()
        else:
            sql = (
                f"DELETE FROM {ref.qualified} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {ref.qualified}"
                " WHERE processed_at < now() - %s LIMIT 10000))"
            )
            params = (older_than,)
        while True:
            cur = conn.execute(sql, params)
            deleted = int(cur.rowcount)
            total += deleted
            if deleted < 10000:
                return total
    finally:
        conn.close()
