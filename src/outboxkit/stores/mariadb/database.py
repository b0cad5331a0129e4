"""MariaDB/MySQL as a :class:`~outboxkit.stores.database.Database`: migrations, emit drivers
(PyMySQL, asyncmy, and outboxkit's own PyMySQL wrapper), namespaces; it hands out the store, the
operator SQL, the inbox and the capture triggers. Connections, URLs and the error table are in
``driver.py``. Drivers are imported only when a connection is made or checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from outboxkit.core.urls import redact_url
from outboxkit.errors import (
    ConfigurationError,
    NoTransactionError,
    OutboxkitError,
    SchemaError,
    UnavailableError,
)
from outboxkit.stores.base import (
    Driver,
    OutboxSchema,
    OutboxStore,
    Statement,
    SyncConnection,
    TableRef,
    validate_identifier,
)
from outboxkit.stores.logcapture import LogCapture
from outboxkit.stores.mariadb.driver import (
    MySqlConnection,
    connect_sync,
    translate,
)

if TYPE_CHECKING:
    from outboxkit.stores.mariadb.capture import MariaDbCapture
    from outboxkit.stores.mariadb.inbox import MariaDbInbox
    from outboxkit.stores.mariadb.ops import MariaDbOps


class MariaDbDatabase:
    name = "mariadb"
    schemes = ("mysql", "mariadb", "mysql+pymysql", "mysql+asyncmy", "mariadb+pymysql", "mariadb+asyncmy")
    paramstyle = "format"
    begin_sql = "BEGIN"
    now_sql = "UTC_TIMESTAMP(6)"
    namespaces = True
    can_kill_sessions = False  # MariaDB's process list shows no client label to find a victim by
    quote = "`"

    def schema(self) -> OutboxSchema:
        from outboxkit.stores.mariadb.schema import MariaDbSchema

        return MariaDbSchema()

    def store(self, url: str, ref: TableRef | None = None, *, hold_dead_keys: bool = True) -> OutboxStore:
        from outboxkit.stores.mariadb.store import MariaDbOutboxStore

        return MariaDbOutboxStore(url, ref, hold_dead_keys=hold_dead_keys)

    def connect(self, url: str, *, label: str = "outboxkit") -> MySqlConnection:
        return connect_sync(url, label=label)

    def migrate(self, url: str, ref: TableRef, statements: Sequence[Statement]) -> None:
        conn = self.connect(url, label="outboxkit-migrate")
        lock = f"outboxkit-migrate:{ref.schema or ''}.{ref.table}"
        try:
            # DDL commits implicitly on this database, so a transaction cannot serialise two
            # migrations; a named lock does (held by this session until released or closed).
            got = conn.execute("SELECT GET_LOCK(%s, 60)", (lock,)).fetchone()
            if not got or got[0] != 1:
                raise UnavailableError(f"another migration of {ref.qualified} holds the lock for over 60 s")
            try:
                for stmt in statements:
                    if isinstance(stmt, tuple):
                        conn.execute(stmt[0], stmt[1])
                    else:
                        conn.execute(stmt)
            finally:
                conn.execute("SELECT RELEASE_LOCK(%s)", (lock,))
        except Exception as exc:
            ours = translate(exc, redact_url(url))
            if ours is None or isinstance(ours, SchemaError):
                raise
            raise ours from None
        finally:
            conn.close()

    def drivers(self) -> Sequence[Driver]:
        return (
            Driver("pymysql.connections", "Connection", False, "format", check_pymysql, _execute),
            Driver(__name__, "MySqlConnection", False, "format", _check_wrapped, _execute_wrapped),
            Driver("asyncmy.connection", "Connection", True, "format", check_pymysql, _execute_async),
        )

    def ops(self) -> MariaDbOps:
        from outboxkit.stores.mariadb.ops import MariaDbOps

        return MariaDbOps()

    def inbox(self) -> MariaDbInbox:
        from outboxkit.stores.mariadb.inbox import MariaDbInbox

        return MariaDbInbox()

    def capture(self) -> MariaDbCapture:
        from outboxkit.stores.mariadb.capture import MariaDbCapture

        return MariaDbCapture()

    def log_captures(self) -> Sequence[LogCapture]:
        from outboxkit.stores.mariadb.binlogcapture import MariaDbBinlogCapture

        return (MariaDbBinlogCapture(),)

    def translate(self, exc: BaseException, where: str) -> OutboxkitError | None:
        return translate(exc, where)

    def create_namespace(self, conn: SyncConnection, name: str) -> None:
        conn.execute(f"CREATE DATABASE IF NOT EXISTS `{validate_identifier(name, 'database')}`")

    def drop_namespace(self, conn: SyncConnection, name: str) -> None:
        conn.execute(f"DROP DATABASE IF EXISTS `{validate_identifier(name, 'database')}`")

    def kill_sessions(self, url: str, label_prefix: str, table_hint: str) -> None:
        raise ConfigurationError("killing sessions by label is not supported on MariaDB")


_IN_TRANS = 1  # SERVER_STATUS_IN_TRANS, sent by the server with every reply
_AUTOCOMMIT = 2  # SERVER_STATUS_AUTOCOMMIT


def check_pymysql(conn: Any) -> None:
    """Refuse a PyMySQL or asyncmy connection on which the INSERT would commit by itself.

    The server reports its state with every reply. With autocommit on, only an explicit BEGIN (or
    ``conn.begin()``) opens a transaction: without one, refuse. With autocommit off (PyMySQL's
    default) every statement runs in a transaction that only the caller's COMMIT ends, even the
    first one (MariaDB sets the in-transaction flag only once a statement wrote or locked), so the
    event commits or rolls back with the caller's changes: accept."""
    status = conn.server_status or 0
    if status & _IN_TRANS or not status & _AUTOCOMMIT:
        return
    raise NoTransactionError(
        "MariaDB/MySQL connection has no open transaction (it is in autocommit mode): run conn.begin()"
        " or BEGIN first, and commit after emit()"
    )


def _check_wrapped(conn: Any) -> None:
    check_pymysql(conn.native)


def _execute(conn: Any, sql: str, params: Sequence[Any]) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, tuple(params))


def _execute_wrapped(conn: Any, sql: str, params: Sequence[Any]) -> None:
    _execute(conn.native, sql, params)


async def _execute_async(conn: Any, sql: str, params: Sequence[Any]) -> None:
    async with conn.cursor() as cur:
        await cur.execute(sql, tuple(params))


DATABASE = MariaDbDatabase()
