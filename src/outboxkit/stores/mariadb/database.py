"""MariaDB/MySQL as a :class:`~outboxkit.stores.base.Database`: URLs, connections, migrations, emit
drivers and the error translation table. PyMySQL (sync) and asyncmy (async) are imported only when
a connection is made or checked.

URLs: ``mysql://user:password@host:3306/database`` (also ``mariadb://`` and the SQLAlchemy forms
``mysql+pymysql://``, ``mysql+asyncmy://``, ``mariadb+pymysql://``); ``?unix_socket=/path`` for
a socket.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from outboxkit.core.urls import redact_url
from outboxkit.errors import (
    ConfigurationError,
    NoTransactionError,
    OutboxkitError,
    SchemaError,
    TransientError,
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

if TYPE_CHECKING:
    from outboxkit.stores.mariadb.capture import MariaDbCapture
    from outboxkit.stores.mariadb.inbox import MariaDbInbox
    from outboxkit.stores.mariadb.ops import MariaDbOps

# Server error codes (https://mariadb.com/kb/en/mariadb-error-codes/) and what each means to us.
_NO_TABLE = 1146
_RETRY = {1205, 1213}  # lock wait timeout, deadlock: the statement can be run again
_GONE = {
    1040,  # too many connections
    1053,  # server shutdown in progress
    1290,  # --read-only (a replica after failover)
    1792,  # read-only transaction
    1836,  # read-only mode
    1927,  # connection killed
    4031,  # disconnected by the server after an idle timeout
}


@dataclass(frozen=True)
class Params:
    """Connection parameters of a MariaDB/MySQL URL."""

    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None

    def kwargs(self, database_key: str = "database") -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect`` and ``asyncmy.connect``."""
        out: dict[str, Any] = {"user": self.user, "password": self.password, database_key: self.database}
        if self.unix_socket:
            out["unix_socket"] = self.unix_socket
        else:
            out.update(host=self.host, port=self.port)
        return out


def parse_url(url: str) -> Params:
    parts = urlsplit(url)
    if not parts.path.strip("/"):
        raise ConfigurationError(f"{redact_url(url)}: name the database, e.g. mysql://user@host:3306/app")
    query = parse_qs(parts.query)
    try:
        port = parts.port or 3306
    except ValueError:
        raise ConfigurationError(f"{redact_url(url)}: the port must be a number") from None
    return Params(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=validate_identifier(unquote(parts.path.strip("/")), "database"),
        unix_socket=query.get("unix_socket", [None])[0],
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def driver_error(exc: BaseException) -> str | None:
    """The DB-API class name of a PyMySQL or asyncmy exception (two hierarchies, one meaning)."""
    for module in ("pymysql.err", "asyncmy.errors"):
        mod = sys.modules.get(module)
        if mod is None:
            continue
        for name in ("ProgrammingError", "OperationalError", "InterfaceError", "InternalError", "Error"):
            cls = getattr(mod, name, None)
            if isinstance(cls, type) and isinstance(exc, cls):
                return name
    return None


def translate(exc: BaseException, where: str) -> OutboxkitError | None:
    """The translation table (tested in tests/unit/test_mariadb_errors.py); None when ``exc`` is not
    a driver or connection error."""
    if isinstance(exc, OutboxkitError):
        return exc
    kind, code = driver_error(exc), error_code(exc)
    if kind == "ProgrammingError" and code == _NO_TABLE:
        return SchemaError(f"no outbox table {where}: run `outboxkit migrate` ({first_line(exc)})")
    if code in _RETRY:
        return TransientError(f"MariaDB ({where}): {first_line(exc)}")
    if kind in ("OperationalError", "InternalError") and (code in _GONE or code is None or code >= 2000):
        # 2xxx: client-side connection errors (can't connect, server gone, lost connection)
        return UnavailableError(f"MariaDB ({where}) is unavailable: {first_line(exc)}")
    if kind == "InterfaceError" or isinstance(exc, ConnectionError | TimeoutError):
        return UnavailableError(f"MariaDB ({where}) is unavailable: {first_line(exc)}")
    if kind is not None:
        return TransientError(f"MariaDB error ({where}): {first_line(exc)}")
    return None


class MySqlConnection:
    """A PyMySQL connection in autocommit mode with ``execute(sql, params) -> cursor``, the shape
    sqlite3 and psycopg connections have (:class:`~outboxkit.stores.base.SyncConnection`).
    ``native`` is the PyMySQL connection. ``emit()`` accepts it too."""

    def __init__(self, native: Any) -> None:
        self.native = native

    def execute(self, sql: Any, params: Any = None, /) -> Any:
        cur = self.native.cursor()
        # PyMySQL formats with % only when params are given: "%%" in a statement with parameters,
        # "%" in one without, as with psycopg.
        cur.execute(sql.decode() if isinstance(sql, bytes) else sql, params)
        return cur

    def close(self) -> None:
        self.native.close()


def session_sql(lock_wait_s: int) -> list[str]:
    """Run on every outboxkit connection: statements see the latest commits (READ COMMITTED, not
    the REPEATABLE READ snapshot a transaction would keep), times in UTC, and a lock wait bounded so
    that a stuck lock surfaces as a retryable error instead of hanging. (Two statements: the
    isolation level cannot share a SET with variables.)"""
    return [
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        f"SET SESSION time_zone = '+00:00', innodb_lock_wait_timeout = {int(lock_wait_s)}",
    ]


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
        import pymysql

        params = parse_url(url)
        try:
            native = pymysql.connect(
                **params.kwargs(),
                autocommit=True,
                connect_timeout=5,
                charset="utf8mb4",
                program_name=label,
            )
            conn = MySqlConnection(native)
            for stmt in session_sql(50):
                conn.execute(stmt)
        except pymysql.err.Error as exc:
            raise UnavailableError(f"MariaDB at {redact_url(url)} is unavailable: {first_line(exc)}") from None
        return conn

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
