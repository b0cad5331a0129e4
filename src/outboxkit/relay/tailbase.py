"""What the log-tailing relay (``relay/tail.py``) needs of a database's log: a reader and a decoder.

``stores.postgres.wal.PostgresWalReader`` with ``stores.postgres.walevents.Decoder`` read a
replication slot; ``stores.mariadb.binlog.MariaDbBinlogReader`` with
``stores.mariadb.binlogevents.BinlogDecoder`` read the binlog.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol

from outboxkit.core.tailing import Transaction


class TailReader(Protocol):
    """One database log as the tailing relay reads it (``stores.postgres.wal.TailReader``,
    ``stores.mariadb.binlog.MariaDbBinlogReader``). Not thread-safe: one relay task uses it.

    ``peek`` returns what is after the confirmed position without moving it; ``advance`` moves it
    (never back) once everything before was confirmed by the broker (G3). A reader whose session
    ended is closed and a new one made: it starts again at the confirmed position.

    A reader whose ``peek`` itself waits (briefly) for the next change, as a streaming one does,
    says so with a class attribute ``waits_in_peek = True`` (see :func:`waits_in_peek`): the relay
    then peeks again at once instead of pausing between peeks."""

    slot: str  # what the logs name the position by (the slot's name, or the binlog position table)
    takeover: float  # seconds after which a silent holder's lock is released to a standby

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    def resume_point(self) -> Hashable:
        """Where a new reader would start (the same value across reconnects while nothing moved)."""
        ...

    def trusted(self) -> bool:
        """Whether the reader's lock can still be its own (a recent round trip proved the session)."""
        ...

    async def try_lock(self) -> bool: ...
    async def ping(self) -> None: ...
    async def peek(self, limit: int) -> tuple[list[Any], int]:
        """Up to about ``limit`` changes for the decoder, and the position every one of them is before."""
        ...

    async def advance(self, lsn: int) -> None: ...
    async def lag_bytes(self) -> int | None: ...
    async def retention_warning(self) -> str | None:
        """A warning to log once the lock is held (the log's retention puts the reader at risk)."""
        ...

    async def mark_delivered(self, seqs: Sequence[int]) -> None: ...
    async def held_keys(self, keys: Sequence[str]) -> set[str]: ...
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
    ) -> None: ...


class TailDecoder(Protocol):
    def transactions(self, messages: Sequence[Any]) -> list[Transaction]:
        """The committed transactions of a peek's changes, each with its outbox events in log order."""
        ...

    def unit_end(self, messages: Sequence[Any]) -> int | None:
        """The position just past the last whole input (transaction, or message outside one) in
        ``messages``, read with as little decoding as possible; None if it cannot be told."""
        ...


def waits_in_peek(reader: object) -> bool:
    """Whether ``reader.peek`` waits for the next change itself (a streaming reader), so that the
    relay must not add a pause of its own between peeks: that pause would be pure latency."""
    return bool(getattr(reader, "waits_in_peek", False))
