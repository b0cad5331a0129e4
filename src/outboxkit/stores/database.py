"""The :class:`Database` role: the one object a store package exposes (as ``DATABASE``), handing out
everything the package knows about its database. Callers get it from ``stores/registry.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from outboxkit.errors import OutboxkitError
from outboxkit.stores.base import Driver, InboxSql, OutboxSchema, OutboxStore, Statement, SyncConnection, TableRef
from outboxkit.stores.capture import TriggerCapture
from outboxkit.stores.logcapture import LogCapture
from outboxkit.stores.ops import OpsDialect


class Database(Protocol):
    """One database: the object a store package exposes as ``DATABASE`` and the registry returns.

    Connections it opens translate nothing by themselves: :meth:`translate` maps the driver's
    exceptions to outboxkit's (the one table per database, tested), so callers decide on our types.
    """

    #: the dialect name (``postgresql``, ``sqlite``, ``mariadb``), as shown by ``outboxkit status``
    name: str
    #: URL schemes (and SQLAlchemy dialect names) that mean this database
    schemes: tuple[str, ...]
    #: how ``?`` placeholders are written for :meth:`connect` connections: ``qmark`` or ``format``
    paramstyle: str
    #: the statement that opens a writer's transaction (SQLite: ``BEGIN IMMEDIATE``)
    begin_sql: str
    #: the database's current UTC time, in the form the outbox's time columns hold
    now_sql: str
    #: whether :meth:`create_namespace` works; without namespaces, isolate with one file (SQLite)
    namespaces: bool
    #: whether :meth:`kill_sessions` can drop other sessions (the lab's ``db-kill`` fault)
    can_kill_sessions: bool
    #: the identifier quote character (``"``; a backtick on MariaDB/MySQL), see :meth:`TableRef.quoted`
    quote: str

    def schema(self) -> OutboxSchema: ...

    def store(self, url: str, ref: TableRef | None = None, *, hold_dead_keys: bool = True) -> OutboxStore: ...

    def connect(self, url: str, *, label: str = "outboxkit") -> SyncConnection:
        """A sync autocommit connection; ``label`` names the session where the database can."""
        ...

    def migrate(self, url: str, ref: TableRef, statements: Sequence[Statement]) -> None:
        """Run ``statements`` as one migration, serialised against concurrent migrations (one
        transaction where DDL is transactional: PostgreSQL, SQLite)."""
        ...

    def drivers(self) -> Sequence[Driver]: ...

    def ops(self) -> OpsDialect: ...

    def inbox(self) -> InboxSql: ...

    def capture(self) -> TriggerCapture: ...

    def log_captures(self) -> Sequence[LogCapture]:
        """The logs of this database a relay can tail (``relay --capture NAME``), the default first;
        empty when it has none (SQLite). Cheap: no driver is imported."""
        ...

    def translate(self, exc: BaseException, where: str) -> OutboxkitError | None:
        """The outboxkit error for a driver exception (``UnavailableError`` for a lost connection,
        ``SchemaError`` for a missing table, ...), or None when it is not the database's fault."""
        ...

    def create_namespace(self, conn: SyncConnection, name: str) -> None:
        """Create a schema (PostgreSQL) / database (MariaDB) for isolated tables; SQLite refuses."""
        ...

    def drop_namespace(self, conn: SyncConnection, name: str) -> None: ...

    def kill_sessions(self, url: str, label_prefix: str, table_hint: str) -> None:
        """Terminate other sessions whose label starts with ``label_prefix`` or that are relays
        working on ``table_hint`` (fault injection)."""
        ...


def placeholders(database: Database, sql: str) -> str:
    """``?`` placeholders written the way ``database``'s sync connections want them."""
    return sql.replace("?", "%s") if database.paramstyle == "format" else sql
