"""URL scheme / dialect name -> the database's package. The one place that knows every database.

Each package under ``stores/`` exposes ``DATABASE``, a :class:`~outboxkit.stores.database.Database`;
importing a package is cheap (its driver is imported when a connection is made), so the registry
can look at all of them to recognise a URL scheme, a SQLAlchemy dialect name or an emit connection.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from typing import Any

from outboxkit.core.urls import redact_url, scheme_of
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import Driver, OutboxSchema, OutboxStore, TableRef
from outboxkit.stores.database import Database
from outboxkit.stores.logcapture import LogCapture

#: dialect name -> package; every database outboxkit supports is one line here.
PACKAGES = {
    "postgresql": "outboxkit.stores.postgres",
    "sqlite": "outboxkit.stores.sqlite",
    "mariadb": "outboxkit.stores.mariadb",
}


def databases() -> Iterator[Database]:
    for package in PACKAGES.values():
        database: Database = importlib.import_module(package).DATABASE
        yield database


def database_named(dialect: str) -> Database:
    """The database for a dialect name, URL scheme or SQLAlchemy dialect name."""
    for database in databases():
        if dialect == database.name or dialect in database.schemes:
            return database
    names = ", ".join(sorted(s for d in databases() for s in d.schemes if "+" not in s))
    raise ConfigurationError(f"unsupported database {dialect!r}: use one of {names}")


def database_for(url: str) -> Database:
    """The database of a URL (``postgresql://``, ``sqlite:///``, ...)."""
    try:
        scheme = scheme_of(url)
    except ValueError:
        scheme = ""
    for database in databases():
        if scheme in database.schemes and "://" in url:
            return database
    examples = " or ".join(f"{d.schemes[0]}://..." for d in databases())
    raise ConfigurationError(f"unsupported database URL {redact_url(url)!r}: use {examples}")


def schemes() -> set[str]:
    return {s for d in databases() for s in d.schemes}


def schema_for(dialect: str) -> OutboxSchema:
    """SQL text for a dialect name (``postgresql``, ``sqlite``, ...) or a URL scheme."""
    return database_named(dialect).schema()


def store_for(url: str, ref: TableRef | None = None, *, hold_dead_keys: bool = True) -> OutboxStore:
    return database_for(url).store(url, ref, hold_dead_keys=hold_dead_keys)


@functools.cache
def _all_drivers() -> tuple[tuple[Database, Driver], ...]:
    return tuple((database, driver) for database in databases() for driver in database.drivers())


def drivers() -> Iterator[tuple[Database, Driver]]:
    """Every connection class emit() accepts, with its database (computed once: emit is hot)."""
    return iter(_all_drivers())


def capture_names() -> list[str]:
    """Every log capture's name (``wal``, ``binlog``), the ``--capture`` values besides ``table``."""
    return [c.name for d in databases() for c in d.log_captures()]


def log_capture_for(url: str, name: str | None = None) -> LogCapture:
    """The log capture ``name`` of the database of ``url`` (or of a dialect name, for ``migrate
    --sql --dialect``; ``name`` None: the database's default one).

    ``ConfigurationError`` in one line when the database has no such log, naming the database that
    has it (``--capture wal needs PostgreSQL (...)``), or when no database has it."""
    database = database_for(url) if "://" in url else database_named(url)
    offered = list(database.log_captures())
    for capture in offered:
        if name is None or capture.name == name:
            return capture
    elsewhere = [c for d in databases() for c in d.log_captures() if c.name == name]
    if name is None or not elsewhere:
        needs = "; ".join(f"--capture {c.name} needs {c.needs}" for d in databases() for c in d.log_captures())
        if name is None:
            raise ConfigurationError(f"{database.name} has no log a relay can tail: {needs}")
        raise ConfigurationError(f"--capture must be one of table, {', '.join(capture_names())}, got {name!r}")
    refusal = f"--capture {name} needs {elsewhere[0].needs}"
    if not offered:
        refusal += f"; {database.name} has no log a relay can tail: use --capture table"
    raise ConfigurationError(refusal)


def translate_db_error(url: str, exc: BaseException) -> BaseException:
    """A driver exception met on a connection to ``url`` (the inbox's own sync connection, say), as
    the store for that database classes it; outboxkit errors and unknown types pass unchanged."""
    ours = database_for(url).translate(exc, redact_url(url))
    return ours if ours is not None else exc


def pooled_stores(database: str, *, max_connections: int, listen_max: int) -> Any | None:
    """Relay stores of many outboxes sharing bounded connections (the relay fleet), for the
    databases that have them (PostgreSQL: ``stores.postgres.pooled.PooledStores``), else None:
    such outboxes keep connections of their own. Made on first use (psycopg only when needed)."""
    if database == "postgresql":
        from outboxkit.stores.postgres.pooled import PooledStores

        return PooledStores(max_connections, listen_max)
    return None
