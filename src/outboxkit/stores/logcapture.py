"""The log-capture role: a database package whose store can tail its own log offers a
:class:`LogCapture` (``Database.log_captures()``); ``relay --capture wal|binlog`` and every command
around it (``migrate --capture``, ``status``, ``slot``, ``--resume-from-now``, the lab, the chaos
runner) reach it through ``stores.registry.log_capture_for``, never by module name.

A capture has three parts, all here as Protocols:

* :class:`LogCapture`: the database side that is not the relay's loop: the DDL, its migration, a
  position's status, its removal, and the "resume from now" recovery when the log is gone;
* :class:`TailReader`: one session on the log, as the tailing relay (``relay/tail.py``) reads it;
* :class:`TailDecoder`: the reader's raw changes -> committed transactions of outbox events.

PostgreSQL offers ``wal`` (a logical replication slot), MariaDB/MySQL ``binlog`` (a replica of the
binlog with its position in a table beside the outbox); SQLite offers none. Adding a log source
(MySQL 8's binlog with its own position rules, a PostgreSQL 17 failover slot) is one module in its
database's package, listed by that package's ``log_captures()``, that passes the tail-reader
conformance suite (``outboxkit.testing.tailing``). docs/log-tailing.md has the design.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from outboxkit.core.tailing import Transaction
from outboxkit.stores.base import TableRef


@dataclass(frozen=True)
class CaptureSql:
    """What ``migrate --sql --capture NAME`` prints after the outbox's own DDL."""

    heading: str  # one ``--`` comment line saying what follows
    statements: list[str]  # each printed with a ``;``
    note: str | None = None  # ``--`` comment lines after them (a step the DDL cannot do)


@dataclass(frozen=True)
class LogStatus:
    """A capture's position as ``outboxkit status`` and ``outboxkit slot status`` show it (H4)."""

    key: str  # its key in ``outboxkit status --json`` (``slot``, ``binlog``)
    exists: bool  # False: this outbox has no position of this capture (no ``migrate --capture``)
    doc: dict[str, Any] = field(default_factory=dict)  # the JSON document under ``key``
    line: str = ""  # one line for ``outboxkit status``
    detail: str = ""  # one line for ``outboxkit slot status`` (also when missing)
    warning: str | None = None  # a retention risk, printed on stderr


@dataclass(frozen=True)
class ResumePlan:
    """Step 1 of ``--resume-from-now``, done by :meth:`LogCapture.resume_plan`; ``relay/resume.py``
    does the rest: drain pending rows with ``seq <= upto`` through the table relay, call
    :attr:`finish`, tail from :attr:`tail_from`."""

    upto: int | None  # the drain's bound; None: the position is healthy, nothing to recover
    at: str  # where the new position is (or why nothing is done), for the log
    tail_from: str  # where the tail starts once drained, for the log
    warning: str | None = None  # what the lost log took with it (table-less events), logged
    finish: Callable[[], None] = lambda: None  # after the drain (binlog: store the new position)


class TailReader(Protocol):
    """One database log as the tailing relay reads it. Not thread-safe: one relay task uses it.

    ``peek`` returns what is after the confirmed position without moving it; ``advance`` moves it
    (never back) once everything before was confirmed by the broker (G3). A reader whose session
    ended is closed and a new one made: it starts again at the confirmed position (G1, G6).

    A reader whose ``peek`` itself waits (briefly) for the next change, as a streaming one does,
    says so with a class attribute ``waits_in_peek = True`` (``relay.tailbase.waits_in_peek``): the
    relay then peeks again at once instead of pausing between peeks."""

    slot: str  # what the logs name the position by (the slot's name, or the binlog position table)
    takeover: float  # seconds after which a silent holder's lock is released to a standby

    async def connect(self) -> None:
        """Open the session and check the position exists (``PositionLostError`` when the log it
        needs is gone: retrying cannot help; ``SchemaError`` before ``migrate --capture``)."""
        ...

    async def close(self) -> None: ...

    def resume_point(self) -> Hashable:
        """Where a new reader would start (the same value across reconnects while nothing moved)."""
        ...

    def trusted(self) -> bool:
        """Whether the reader's lock can still be its own (a recent round trip proved the session)."""
        ...

    async def try_lock(self) -> bool:
        """Take the one-reader-per-position lock without waiting (False: another reader holds it).
        The lock goes with the session: a paused holder loses it after ``takeover`` seconds (H6)."""
        ...

    async def ping(self) -> None:
        """A round trip that keeps the session (and its lock) alive while the broker is slow."""
        ...

    async def peek(self, limit: int) -> tuple[list[Any], int]:
        """Up to about ``limit`` changes for the decoder, and the position every one of them is before."""
        ...

    async def advance(self, lsn: int) -> None:
        """Move the confirmed position to ``lsn`` (a position :meth:`peek` or the decoder gave; never back)."""
        ...

    async def lag_bytes(self) -> int | None:
        """Log the position retains (written after it, any table's: H4); None when unknown."""
        ...

    async def retention_warning(self) -> str | None:
        """A warning to log once the lock is held (the log's retention puts the reader at risk)."""
        ...

    async def mark_delivered(self, seqs: Sequence[int]) -> None:
        """Set ``delivered_at`` on these outbox rows (those still there)."""
        ...

    async def held_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys among ``keys`` that have a dead letter (H5)."""
        ...

    async def dead_row(self, seq: int, error: str, attempts: int, *, keep_key: bool = True) -> bool:
        """Mark the row a dead letter (False when it is gone). ``keep_key=False`` also clears its
        key: the fallback for a key the store cannot index (H13); the reason names the key."""
        ...

    async def dead_message(
        self,
        *,
        id: str | None,
        topic: str,
        key: str | None,
        type: str | None,
        source: str | None,
        payload: bytes,
        content_type: str,
        headers: str,
        attempts: int,
        error: str,
    ) -> None:
        """Record a dead letter that has no row (a table-less event, or a row its writer deleted)
        as a new row with ``dead_at`` set, so that ``dead-letters`` lists it."""
        ...


class TailDecoder(Protocol):
    """Pure: no I/O. One per relay session (it may number events across peeks)."""

    def transactions(self, messages: Sequence[Any]) -> list[Transaction]:
        """The committed transactions of a peek's changes, each with its outbox events in log order.
        Traffic that is not this outbox's gives transactions without items; an input that cannot
        become an event gives an item with a ``defect`` (a dead letter), never an exception (H13)."""
        ...

    def unit_end(self, messages: Sequence[Any]) -> int | None:
        """The position just past the last whole input (transaction, or message outside one) in
        ``messages``, read with as little decoding as possible; None if it cannot be told."""
        ...


class LogCapture(Protocol):
    """One log a database package can tail for the relay (``relay --capture NAME``).

    Every method takes the database URL and the outbox; each opens and closes its own connection
    (none is kept). Errors are outboxkit's: ``UnavailableError`` for a database that cannot be
    reached, ``ConfigurationError`` for a server that cannot do it (binary log off, ...)."""

    #: the ``--capture`` value (``wal``, ``binlog``); unique across the databases
    name: str
    #: what it needs, for the one-line refusal on another database: ``PostgreSQL (a postgresql:// database)``
    needs: str

    def sql(self, url: str | None, ref: TableRef) -> CaptureSql:
        """The DDL of ``migrate --capture NAME``, printed by ``migrate --sql`` (no connection is made;
        ``ConfigurationError`` when the DDL needs something only ``url`` can say and it is None)."""
        ...

    def migrate(self, url: str, ref: TableRef) -> str:
        """Create the capture's position (idempotent; after the outbox's own migration) and say, in
        one line, what is in place (``migrate --capture NAME`` prints it)."""
        ...

    def reader(self, url: str, ref: TableRef, *, takeover: float, slot: str | None = None) -> TailReader:
        """A new, unconnected reader. ``slot`` names the position where the log has several per
        outbox (a replication slot); a capture without names refuses one (``ConfigurationError``)."""
        ...

    def decoder(self, ref: TableRef) -> TailDecoder:
        """A new decoder for one relay session."""
        ...

    def status(self, url: str, ref: TableRef) -> LogStatus:
        """The position: lag, retention risk, who reads it (``exists`` False when there is none)."""
        ...

    def drop(self, url: str, ref: TableRef) -> tuple[str, bool]:
        """Remove the position (the log it retained is released: events not relayed yet stay only in
        the outbox table, if they have a row). Returns (what, e.g. ``slot NAME``; whether it existed)."""
        ...

    def resume_plan(self, url: str, ref: TableRef) -> ResumePlan:
        """Step 1 of ``--resume-from-now`` when the log the position needs is gone: a new position
        from which every later commit is in the log, and the highest outbox seq read after it (every
        row committed before the new position has a seq at most that). Refused while a relay holds
        the position's lock. A healthy position is left alone (``upto`` None)."""
        ...

    def log_only_backlog(self, url: str, ref: TableRef) -> int | None:
        """Events of this outbox that exist only in the log and wait there (table-less events); 0
        where the log holds none of those; None when it cannot be told now (a relay is reading)."""
        ...
