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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import ConfigurationError

SCHEMA_VERSION = 1

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

    async def acquire_relay_lock(self) -> bool:
        """Try to become the one relay of this outbox; False if another relay holds it.

        The lock dies with the holder's connection or process, so a SIGKILLed relay never leaves
        it stuck."""
        ...

    async def fetch_pending(self, limit: int, skip: Filter) -> Sequence[OutboxEvent]:
        """Up to ``limit`` committed, undelivered, not dead rows in ascending ``seq``.

        Must not page with a cursor (H1): a row whose transaction committed late, with a seq
        lower than rows already delivered, must still be returned. Rows whose key has a dead
        letter are left out when the store was opened with ``hold_dead_keys=True``."""
        ...

    async def mark_delivered(self, seqs: Sequence[int]) -> None:
        """Record that the broker confirmed these rows (G3). Durable when it returns."""
        ...

    async def record_failure(self, seq: int, error: str, *, dead: bool) -> None:
        """Count an attempt and keep the error; ``dead=True`` makes the row a dead letter."""
        ...

    async def wait_for_new(self, timeout: float) -> None:
        """Return when new rows may have been committed, or after ``timeout`` seconds."""
        ...

    async def pending_count(self) -> int:
        """Rows neither delivered nor dead (for status and tests)."""
        ...
