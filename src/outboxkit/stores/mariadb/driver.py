"""MariaDB/MySQL connections: URLs, the sync connection outboxkit's tools use (PyMySQL), the session
settings every connection gets, and the error translation table (H12). The bottom of the package:
``store``, ``ops``, ``inbox`` and ``database`` build on it. Drivers are imported only when a
connection is made.

URLs: ``mysql://user:password@host:3306/database`` (also ``mariadb://`` and the SQLAlchemy forms
``mysql+pymysql://``, ``mysql+asyncmy://``, ``mariadb+pymysql://``); ``?unix_socket=/path`` for
a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, OutboxkitError, SchemaError, TransientError, UnavailableError
from outboxkit.stores.base import validate_identifier

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


_DRIVER_MODULES = frozenset({"pymysql.err", "MySQLdb.err", "asyncmy.errors"})
_DRIVER_CLASSES = frozenset({"ProgrammingError", "OperationalError", "InterfaceError", "InternalError", "Error"})


def driver_error(exc: BaseException) -> str | None:
    """The DB-API class name of a PyMySQL or asyncmy exception (two hierarchies, one meaning).

    Matched by module and name along the class's MRO rather than by ``isinstance`` against the
    imported classes: with ``pymysql.install_as_MySQLdb()`` (Django on PyMySQL) importing
    ``MySQLdb.converters`` loads a second copy of PyMySQL's ``err`` module as ``MySQLdb.err``, whose
    classes are not the ones ``pymysql.err`` holds."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _DRIVER_CLASSES and cls.__module__ in _DRIVER_MODULES:
            return cls.__name__
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


def connect_sync(url: str, *, label: str = "outboxkit") -> MySqlConnection:
    """A PyMySQL connection in autocommit mode with the session settings, wrapped."""
    import pymysql  # outside the try: a missing extra is reported as such, not as an outage

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
