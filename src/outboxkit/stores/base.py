"""The store roles. A newcomer adding a database reads this file, one adapter package (for example
``stores/sqlite/``) and the store conformance suite (``outboxkit.testing.stores``).

A database is one package under ``stores/`` that exposes one
:class:`~outboxkit.stores.database.Database` object, registered
by URL scheme in ``stores/registry.py``. Everything that knows the database's SQL or driver lives in
that package; callers (emit, migrate, relay, inbox, ops, lab, CLI) ask these protocols and never
branch on a dialect:

* :class:`OutboxSchema` — pure SQL text: the DDL that ``outboxkit migrate`` runs or prints, and the
  INSERT that ``emit()`` runs on the caller's own connection.
* :class:`OutboxStore` — the relay's side: read committed pending rows, mark them, wait for new
  ones. Asyncio; one store instance is used by one relay task at a time (not thread-safe).
* :class:`Driver` — one connection class ``emit()`` accepts (sqlite3, psycopg, PyMySQL, ...).
* :class:`InboxSql` — the consumer's inbox tables and its claim statement.
* :class:`~outboxkit.stores.ops.OpsDialect` — the SQL behind status, dead letters, replay, cleanup.
* :class:`~outboxkit.stores.capture.TriggerCapture` — change capture by triggers on business tables.
* :class:`~outboxkit.stores.database.Database` — the one object that hands all of the above out,
  plus sync connections for operator work, migrations and tests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import ConfigurationError

SCHEMA_VERSION = 2  # 2: lease and relay tables (many relays per outbox)

#: Keys hash into this many buckets; relays lease buckets. Fixed: changing it would move keys
#: between buckets while relays hold leases.
BUCKETS = 64

#: Leases held by one relay: bucket -> epoch. The epoch fences every mark (H6).
Leases = Mapping[int, int]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


def validate_identifier(name: str, what: str) -> str:
    """Identifiers are validated once, at configuration time, then always quoted."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} name {name!r}: use 1-48 letters, digits or '_', not starting with a digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class TableRef:
    """Where the outbox lives: validated names, and their quoted forms for SQL text."""

    table: str = "outbox"
    schema: str | None = None

    def __post_init__(self) -> None:
        validate_identifier(self.table, "table")
        if self.schema is not None:
            validate_identifier(self.schema, "schema")

    @property
    def qualified(self) -> str:
        """The quoted, schema-qualified name in standard SQL quotes (PostgreSQL, SQLite)."""
        return self.quoted('"')

    def quoted(self, quote: str) -> str:
        """The qualified name quoted with ``quote`` (``"``, or a backtick for MariaDB/MySQL)."""
        name = f"{quote}{self.table}{quote}"
        return f"{quote}{self.schema}{quote}.{name}" if self.schema else name

    def derived(self, suffix: str, quote: str = '"') -> str:
        """A quoted, schema-qualified name for an object that belongs to this outbox."""
        name = f"{quote}{self.table}_{suffix}{quote}"
        return f"{quote}{self.schema}{quote}.{name}" if self.schema else name

    def index_name(self, suffix: str, quote: str = '"') -> str:
        return f"{quote}{self.table}_{suffix}{quote}"

    @property
    def channel(self) -> str:
        """NOTIFY channel: short and stable (channel names are limited to 63 bytes)."""
        digest = hashlib.sha1(f"{self.schema or ''}.{self.table}".encode(), usedforsecurity=False).hexdigest()[:16]
        return f"outboxkit_{digest}"

    @property
    def lock_name(self) -> str:
        return f"outboxkit:{self.schema or ''}.{self.table}"


#: A fetch returns at most this many payload bytes (plus one row), whatever the row limit: 2,000
#: rows of 1 MiB must not mean 2 GB in the relay's memory.
DEFAULT_FETCH_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Filter:
    """What a fetch must leave out, because the relay is waiting before trying it again.

    * ``paused_topics``: topics nothing routes (unroutable for now), and with them every pending
      row of a key that has a row on such a topic (G5);
    * ``held_keys``: keys whose earliest pending event failed and waits for its retry: the whole
      key waits, so nothing overtakes it (G5), while other keys flow;
    * ``held_seqs``: keyless events waiting for their retry (they order nothing, so only themselves).
    """

    paused_topics: frozenset[str] = frozenset()
    held_keys: frozenset[str] = frozenset()
    held_seqs: frozenset[int] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.paused_topics or self.held_keys or self.held_seqs)


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """The outcome of one lease round trip.

    ``held``: bucket -> epoch now held (a lost lease is absent). ``share``: how many buckets this
    relay should hold (BUCKETS when alone). A relay holding more than its share stops taking new
    work from the surplus buckets and releases them once nothing of theirs is in flight (drain,
    then release), so a joining relay never re-sends what the old owner already published (G6).
    """

    held: dict[int, int]
    share: int = BUCKETS


class OutboxSchema(Protocol):
    """SQL text for one database. Pure: no connection needed."""

    def ddl(self, ref: TableRef, *, notify: bool = True) -> list[str]:
        """Statements that create or upgrade the outbox idempotently, in order."""
        ...

    def insert_sql(self, ref: TableRef, paramstyle: str) -> str:
        """INSERT of one event; ``paramstyle`` is ``"format"`` (%s), ``"qmark"`` (?) or ``"named"``
        (:name, for SQLAlchemy ``text()``). Columns: id, topic, key, type, source, payload,
        content_type, headers (JSON text)."""
        ...


class OutboxStore(Protocol):
    """The relay's view of one outbox table. Methods raise outboxkit errors only (H12): every
    driver exception is translated at this boundary by a table the store's tests exercise.

    * :class:`~outboxkit.errors.UnavailableError`: the connection is gone, or the node cannot
      serve the relay (read-only after a fail-over, shutting down, out of connections or disk);
    * :class:`~outboxkit.errors.TransientError`: anything else the driver raised (serialization
      failure, deadlock, an error nobody expected);
    * :class:`~outboxkit.errors.SchemaError`: the outbox tables are missing or too old.

    On the first two the caller closes the store and opens a new one after a backoff. Nothing here
    holds state that a crash could corrupt: a row is pending until ``mark_delivered`` or
    ``record_failure(dead=True)`` committed.
    """

    async def open(self) -> None:
        """Connect and check the schema (``SchemaError`` if ``migrate`` has not run)."""
        ...

    async def close(self) -> None:
        """Release connections and the relay lock. Safe to call twice or after a failure."""
        ...

    async def maintain_leases(self, owner: str, held: Leases, ttl: float, *, rebalance: bool) -> LeaseGrant:
        """Heartbeat as ``owner``, renew the leases in ``held`` for ``ttl`` seconds on the
        database's clock, and, when ``rebalance``, acquire free or expired buckets up to this
        relay's fair share. Never releases a bucket by itself: the relay drains, then calls
        :meth:`release_leases`. Returns the leases now held and the share. Unexpired leases of
        ``owner`` that ``held`` lacks or holds at another epoch (an earlier process under the same
        name) are taken back at once, at a new epoch (``core.leases.adopt``).

        A lease dies with its holder after ``ttl`` (SIGKILL, pause, partition), so another relay
        takes the bucket over with a higher epoch. Single-relay stores (SQLite) use a process lock
        and grant either every bucket or none."""
        ...

    async def release_leases(self, owner: str, buckets: Collection[int] | None = None) -> None:
        """Give leases of ``owner`` back at once so others take over now: ``buckets`` only, or all
        of them (clean shutdown) when ``None``."""
        ...

    async def fetch_pending(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> Sequence[OutboxEvent]:
        """Up to ``limit`` committed, undelivered, not dead rows in ascending ``seq``, of the leased
        buckets only (``None``: every bucket), and no more payload than ``max_bytes`` (at least one row),
        leaving out the seqs in ``exclude`` (the rows the relay holds in hand: in flight, or
        confirmed with their mark on its way).

        Must not page with a cursor (H1): a row whose transaction committed late, with a seq
        lower than rows already delivered, must still be returned. Rows whose key has a dead
        letter are left out when the store was opened with ``hold_dead_keys=True``. Must not fail
        because of a row's content (H11): each row goes through ``core.rows.event_from_row``, and a
        row that breaks the contract comes back with ``defect`` set, for the relay to dead-letter."""
        ...

    async def pending_seqs(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> list[int]:
        """The seqs ``fetch_pending`` with the same arguments would return, reading no other
        column: when a fetch fails twice the same way (a driver that cannot decode one row's
        text), the relay narrows it down to the row at fault (H13, ``core.isolate``) from these."""
        ...

    async def fetch_rows(self, seqs: Sequence[int]) -> Sequence[OutboxEvent]:
        """The pending rows among ``seqs``, read as ``fetch_pending`` reads them (no filter, no
        lease check): one probe of that narrowing. May fail the way the fetch failed."""
        ...

    async def fetch_committed(self, ids: Sequence[str]) -> Sequence[OutboxEvent]:
        """The pending rows among ``ids`` that are committed and have no earlier pending row of the
        same key (nor, with ``hold_dead_keys``, a dead letter of the key), in ``seq`` order: what a
        writer may publish right after its commit without overtaking an earlier event of the key
        (G5). Rows that do not qualify are left to the relay."""
        ...

    async def mark_delivered(self, seqs: Sequence[int], leases: Leases | None = None) -> int:
        """Record that the broker confirmed these rows (G3). Durable when it returns.

        Fenced (H6): a row is marked only while ``leases`` still holds its bucket at the same
        epoch. Returns how many rows were marked; fewer than asked means a lease was lost (or
        another relay marked them first)."""
        ...

    async def record_failure(self, seq: int, error: str, *, dead: bool, leases: Leases | None = None) -> bool:
        """Count an attempt and keep the error (any text: the store makes it storable, e.g. strips
        NUL); ``dead=True`` makes the row a dead letter. Fenced like ``mark_delivered``; returns
        whether the row was updated."""
        ...

    async def wait_for_new(self, timeout: float) -> None:
        """Return when new rows may have been committed, or after ``timeout`` seconds."""
        ...

    async def pending_count(self) -> int:
        """Rows neither delivered nor dead (for status and tests)."""
        ...


#: A migration step: DDL text, or a statement with its bound parameters.
Statement = str | tuple[str, Sequence[Any]]


class SyncConnection(Protocol):
    """A sync connection in autocommit mode: transactions are explicit ``BEGIN``/``COMMIT``
    statements. ``sqlite3`` and psycopg connections are one already; a store wraps other drivers
    (PyMySQL has no ``Connection.execute``)."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any:
        """Run one statement; returns a cursor (``fetchone``/``fetchall``/``rowcount``/``description``)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Driver:
    """A connection class ``emit()`` accepts, recognised by module and class name so that the
    driver's library is never imported by outboxkit unless the caller already did.

    ``check`` raises :class:`~outboxkit.errors.NoTransactionError` when the connection has no open
    transaction; ``execute`` runs the INSERT (for an async driver it returns an awaitable)."""

    module: str
    name: str
    is_async: bool
    paramstyle: str
    check: Callable[[Any], None]
    execute: Callable[[Any, str, Sequence[Any]], Awaitable[None] | None]


class InboxSql(Protocol):
    """The consumer's inbox on this database (see ``outboxkit.inbox``)."""

    #: the longest event id (in characters) the inbox table keeps whole; a longer one would be
    #: truncated (MariaDB's INSERT IGNORE) or refused by the index, so the inbox parks it instead
    max_event_id: int

    def ddl(self, ref: TableRef) -> list[str]:
        """Create ``<ref>`` (consumer, event_id, processed_at) and ``<ref>_dead`` idempotently."""
        ...

    def claim_sql(self, ref: TableRef) -> str:
        """INSERT of (consumer, event_id) that changes no row (rowcount 0) when the pair exists:
        run in the consumer's transaction, it is the duplicate check (G7)."""
        ...

    def start_sql(self, ref: TableRef) -> str:
        """INSERT of (consumer, event_id) marked *unfinished* (processed_at at the epoch), changing
        no row when the pair exists. The inbox runner's claim: if a handler's implicit commit makes
        it durable too early, the mark says the event was never processed (H14)."""
        ...

    def unfinished_sql(self, ref: TableRef) -> str:
        """SELECT of the (consumer, event_id) row if it is still marked unfinished, as a locking read
        of the latest committed row: a claim that a handler's implicit commit left behind."""
        ...

    def finish_sql(self, ref: TableRef) -> str:
        """UPDATE of the (consumer, event_id) row to processed now: the last statement before COMMIT."""
        ...

    def dead_sql(self, ref: TableRef) -> str:
        """INSERT of (consumer, event_id, topic, key, payload, headers, error, attempts), ignoring
        a pair that is already there."""
        ...

    def cleanup(self, ref: TableRef, older_than: timedelta, batch: int) -> tuple[str, Sequence[Any]]:
        """One DELETE of at most ``batch`` rows processed before now minus ``older_than``."""
        ...
