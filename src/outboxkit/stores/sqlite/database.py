"""SQLite as a :class:`~outboxkit.stores.database.Database`: connections, migrations, emit driver,
error translation."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from outboxkit.errors import ConfigurationError, NoTransactionError, OutboxkitError, SchemaError
from outboxkit.stores.base import Driver, OutboxSchema, OutboxStore, Statement, SyncConnection, TableRef
from outboxkit.stores.logcapture import LogCapture
from outboxkit.stores.sqlite.inbox import SqliteInbox
from outboxkit.stores.sqlite.ops import SqliteOps
from outboxkit.stores.sqlite.store import SqliteOutboxStore, SqliteSchema, connect, sqlite_path, translate

if TYPE_CHECKING:
    from outboxkit.stores.sqlite.capture import SqliteCapture


class SqliteDatabase:
    name = "sqlite"
    schemes = ("sqlite",)
    paramstyle = "qmark"
    # IMMEDIATE takes the write lock at BEGIN: two writers never deadlock upgrading a read lock.
    begin_sql = "BEGIN IMMEDIATE"
    now_sql = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    namespaces = False
    can_kill_sessions = False
    quote = '"'

    def schema(self) -> OutboxSchema:
        return SqliteSchema()

    def store(self, url: str, ref: TableRef | None = None, *, hold_dead_keys: bool = True) -> OutboxStore:
        return SqliteOutboxStore(url, ref, hold_dead_keys=hold_dead_keys)

    def connect(self, url: str, *, label: str = "outboxkit") -> SyncConnection:
        return connect(sqlite_path(url), timeout=30)

    def migrate(self, url: str, ref: TableRef, statements: Sequence[Statement]) -> None:
        lite = connect(sqlite_path(url))
        try:
            # One writer at a time: BEGIN IMMEDIATE serialises concurrent migrations too.
            lite.execute("BEGIN IMMEDIATE")
            for stmt in statements:
                if isinstance(stmt, tuple):
                    lite.execute(stmt[0], stmt[1])
                else:
                    lite.execute(stmt)
            lite.execute("COMMIT")
        finally:
            lite.close()

    def drivers(self) -> Sequence[Driver]:
        return (Driver("sqlite3", "Connection", False, "qmark", _check, _execute),)

    def ops(self) -> SqliteOps:
        return SqliteOps()

    def inbox(self) -> SqliteInbox:
        return SqliteInbox()

    def capture(self) -> SqliteCapture:
        from outboxkit.stores.sqlite.capture import SqliteCapture

        return SqliteCapture()

    def log_captures(self) -> Sequence[LogCapture]:
        # A file has no log another process can follow: the table relay (with its file watch) it is.
        return ()

    def translate(self, exc: BaseException, where: str) -> OutboxkitError | None:
        # The one table for SQLite (H12), shared with the relay store: store.translate.
        if isinstance(exc, OutboxkitError):
            return exc  # already translated (a connection this package opened)
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            return SchemaError(f"no outbox table {where}: run `outboxkit migrate`")
        if isinstance(exc, sqlite3.Error):
            return translate(where, exc)
        return None

    def create_namespace(self, conn: SyncConnection, name: str) -> None:
        raise ConfigurationError("SQLite has no schemas; use one file per namespace")

    def drop_namespace(self, conn: SyncConnection, name: str) -> None:
        raise ConfigurationError("SQLite has no schemas; use one file per namespace")

    def kill_sessions(self, url: str, label_prefix: str, table_hint: str) -> None:
        raise ConfigurationError("SQLite has no server sessions to kill")


def _check(conn: Any) -> None:
    if not conn.in_transaction:
        raise NoTransactionError(
            "sqlite3 connection has no open transaction: run conn.execute('BEGIN') or your own "
            "INSERT/UPDATE first, and commit after emit()"
        )


def _execute(conn: Any, sql: str, params: Sequence[Any]) -> None:
    conn.execute(sql, params)


DATABASE = SqliteDatabase()
