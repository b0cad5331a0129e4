"""PostgreSQL as a :class:`~outboxkit.stores.database.Database`: connections, migrations, emit drivers,
error translation. psycopg is imported only when a connection is made or checked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from outboxkit.core.urls import redact_url
from outboxkit.errors import NoTransactionError, OutboxkitError, SchemaError, UnavailableError
from outboxkit.stores.base import Driver, OutboxSchema, OutboxStore, Statement, SyncConnection, TableRef
from outboxkit.stores.logcapture import LogCapture
from outboxkit.stores.postgres.connection import connect_sync, first_line, libpq_url

if TYPE_CHECKING:
    from outboxkit.stores.postgres.capture import PostgresCapture
    from outboxkit.stores.postgres.inbox import PostgresInbox
    from outboxkit.stores.postgres.ops import PostgresOps


class PostgresDatabase:
    name = "postgresql"
    schemes = ("postgresql", "postgres", "postgresql+psycopg")
    paramstyle = "format"
    begin_sql = "BEGIN"
    now_sql = "now()"
    namespaces = True
    can_kill_sessions = True
    quote = '"'

    def schema(self) -> OutboxSchema:
        from outboxkit.stores.postgres.schema import PostgresSchema

        return PostgresSchema()

    def store(self, url: str, ref: TableRef | None = None, *, hold_dead_keys: bool = True) -> OutboxStore:
        from outboxkit.stores.postgres.store import PostgresOutboxStore

        return PostgresOutboxStore(libpq_url(url), ref, hold_dead_keys=hold_dead_keys)

    def connect(self, url: str, *, label: str = "outboxkit") -> SyncConnection:
        return connect_sync(url, label=label)

    def migrate(self, url: str, ref: TableRef, statements: Sequence[Statement]) -> None:
        import psycopg

        try:
            with psycopg.connect(libpq_url(url), connect_timeout=5) as conn, conn.transaction():
                # Serialise concurrent migrations of the same outbox (two deploys at once).
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))", [ref.lock_name])
                for stmt in statements:
                    if isinstance(stmt, tuple):
                        conn.execute(stmt[0].encode(), stmt[1])
                    else:
                        conn.execute(stmt.encode())  # bytes: DDL text with validated, quoted identifiers
        except psycopg.OperationalError as exc:
            raise UnavailableError(f"PostgreSQL at {redact_url(url)} is unavailable: {first_line(exc)}") from None

    def drivers(self) -> Sequence[Driver]:
        return (
            Driver("psycopg", "Connection", False, "format", check_psycopg, _execute),
            Driver("psycopg", "AsyncConnection", True, "format", check_psycopg, _execute),
        )

    def ops(self) -> PostgresOps:
        from outboxkit.stores.postgres.ops import PostgresOps

        return PostgresOps()

    def inbox(self) -> PostgresInbox:
        from outboxkit.stores.postgres.inbox import PostgresInbox

        return PostgresInbox()

    def capture(self) -> PostgresCapture:
        from outboxkit.stores.postgres.capture import PostgresCapture

        return PostgresCapture()

    def log_captures(self) -> Sequence[LogCapture]:
        from outboxkit.stores.postgres.walcapture import PostgresWalCapture

        return (PostgresWalCapture(),)

    def translate(self, exc: BaseException, where: str) -> OutboxkitError | None:
        # The one table for PostgreSQL (H12), shared with the relay store: store.translate.
        if isinstance(exc, OutboxkitError):
            return exc  # already translated (a connection this package opened)
        import psycopg

        from outboxkit.stores.postgres.store import translate

        if isinstance(exc, psycopg.errors.UndefinedTable):
            return SchemaError(f"no outbox table {where}: run `outboxkit migrate`")
        if isinstance(exc, psycopg.Error):
            return translate(where, exc)
        return None

    def create_namespace(self, conn: SyncConnection, name: str) -> None:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')

    def drop_namespace(self, conn: SyncConnection, name: str) -> None:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def kill_sessions(self, url: str, label_prefix: str, table_hint: str) -> None:
        conn = self.connect(url, label="outboxkit-fault")
        try:
            # Sessions labelled for the victim, and the relay sessions whose last statement touched
            # the victim's tables (fetch, mark, lease renewal); other tests' relays are left alone.
            conn.execute(
                """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND (application_name LIKE %s OR (application_name = 'outboxkit-relay' AND query LIKE %s))""",
                (f"{label_prefix}%", f"%{table_hint}%"),
            )
        finally:
            conn.close()


def _execute(conn: Any, sql: str, params: Sequence[Any]) -> Any:
    return conn.execute(sql, params)


_psycopg_status: Any = None


def check_psycopg(conn: Any) -> None:
    """Refuse a psycopg connection (sync or async) that has no open transaction."""
    global _psycopg_status
    if _psycopg_status is None:
        from psycopg.pq import TransactionStatus

        _psycopg_status = TransactionStatus
    # Status, not the autocommit flag: an autocommit connection after an explicit BEGIN is in a
    # real transaction, and a non-autocommit one before its first statement is not (yet).
    status = conn.info.transaction_status
    if status == _psycopg_status.INTRANS:
        return
    # Pipeline mode: statements are in flight, so the status says ACTIVE. psycopg opened a
    # transaction for them unless the connection is in autocommit mode outside transaction().
    in_pipeline = status == _psycopg_status.ACTIVE and conn._pipeline is not None
    if in_pipeline and (not conn.autocommit or getattr(conn, "_num_transactions", 0) > 0):
        return
    if status == _psycopg_status.INERROR:
        raise NoTransactionError("the transaction is aborted (an earlier statement failed): roll back first")
    raise NoTransactionError(
        "psycopg connection has no open transaction"
        + (" (it is in autocommit mode)" if conn.autocommit else "")
        + ": emit inside `with conn.transaction():` so the event commits with your change"
    )


DATABASE = PostgresDatabase()
