"""The store roles. A newcomer adding a database reads this file, one adapter and the conformance suite.

Two roles per database:

* :class:`OutboxSchema` — pure SQL text for one database: the DDL that ``outboxkit migrate``
  runs or prints, and the INSERT that ``emit()`` runs on the caller's own connection.
* :class:`OutboxStore` — the relay's side: read committed pending rows, mark them, wait for new
  ones. Asyncio; one store instance is used by one relay task at a time (not thread-safe).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

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
        quoted = f'"{self.table}"'
        return f'"{self.schema}".{quoted}' if self.schema else quoted

    def derived(self, suffix: str) -> str:
        """A quoted, schema-qualified name for an object that belongs to this outbox."""
        name = f'"{self.table}_{suffix}"'
        return f'"{self.schema}".{name}' if self.schema else name

    def index_name(self, suffix: str) -> str:
        return f'"{self.table}_{suffix}"'

    @property
    def channel(self) -> str:
        """NOTIFY channel: short and stable (channel names are limited to 63 bytes)."""
        digest = hashlib.sha1(f"{self.schema or ''}.{self.table}".encode(), usedforsecurity=False).hexdigest()[:16]
        return f"outboxkit_{digest}"

    @property
    def lock_name(self) -> str:
        return f"outboxkit:{self.schema or ''}.{self.table}"


@dataclass(frozen=True, slots=True)
class Filter:
    """What a fetch must leave out: topics in backoff (unroutable for now)."""

    paused_topics: frozenset[str] = frozenset()


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
    """The relay's view of one outbox table. Methods raise outboxkit errors only.

    Connection loss surfaces as :class:`~outboxkit.errors.UnavailableError`; the caller closes
    the store and opens a new one (after backoff). Nothing here holds state that a crash could
    corrupt: a row is pending until ``mark_delivered`` or ``dead_letter`` committed.
    """

    async def open(self) -> None:
        """Connect and check the schema (``SchemaError`` if ``migrate`` has not run)."""
        ...

    async def close(self) -> None:
        """Release connections and the relay lock. Safe to call twice or after a failure."""
        ...

    async def maintain_leases(self, owner: str, held: Leases, ttl: float, *, rebalance: bool) -> dict[int, int]:
        """Heartbeat as ``owner``, renew the leases in ``held`` for ``ttl`` seconds, and, when
        ``rebalance``, release buckets beyond this relay's fair share and acquire free or expired
        ones up to it. Returns the leases now held (a lost lease is simply absent).

        A lease dies with its holder after ``ttl`` (SIGKILL, pause, partition), so another relay
        takes the bucket over with a higher epoch. Single-relay stores (SQLite) use a process lock
        and return either every bucket or none."""
        ...

    async def release_leases(self, owner: str) -> None:
        """Give every lease of ``owner`` back at once (clean shutdown), so others take over now."""
        ...

    async def fetch_pending(self, limit: int, skip: Filter, leases: Leases | None = None) -> Sequence[OutboxEvent]:
        """Up to ``limit`` committed, undelivered, not dead rows in ascending ``seq``, of the leased
        buckets only (``None``: every bucket).

        Must not page with a cursor (H1): a row whose transaction committed late, with a seq
        lower than rows already delivered, must still be returned. Rows whose key has a dead
        letter are left out when the store was opened with ``hold_dead_keys=True``."""
        ...

    async def fetch_committed(self, ids: Sequence[str]) -> Sequence[OutboxEvent]:
        """The pending rows among ``ids`` that are committed and have no earlier pending row of the
        same key, in ``seq`` order: what a writer may publish right after its commit without
        overtaking an earlier event of the key (G5). Rows that do not qualify are left to the relay."""
        ...

    async def mark_delivered(self, seqs: Sequence[int], leases: Leases | None = None) -> int:
        """Record that the broker confirmed these rows (G3). Durable when it returns.

        Fenced (H6): a row is marked only while ``leases`` still holds its bucket at the same
        epoch. Returns how many rows were marked; fewer than asked means a lease was lost (or
        another relay marked them first)."""
        ...

    async def record_failure(self, seq: int, error: str, *, dead: bool, leases: Leases | None = None) -> bool:
        """Count an attempt and keep the error; ``dead=True`` makes the row a dead letter. Fenced
        like ``mark_delivered``; returns whether the row was updated."""
        ...

    async def wait_for_new(self, timeout: float) -> None:
        """Return when new rows may have been committed, or after ``timeout`` seconds."""
        ...

    async def pending_count(self) -> int:
        """Rows neither delivered nor dead (for status and tests)."""
        ...
