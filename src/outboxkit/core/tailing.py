"""What a log-tailing reader hands the tailing relay: committed transactions of outbox events.

Shared by every capture that reads a database's log (PostgreSQL logical decoding, the MariaDB/MySQL
binlog): the decoder of each builds these, the relay (``relay/tail.py``) publishes them. ``end_lsn``
is the reader's own position token for the end of the transaction: it only has to grow in log
order, and the reader turns it back into its database's position when the relay advances."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from outboxkit.core.envelope import OutboxEvent


@dataclass(slots=True)
class Item:
    event: OutboxEvent
    row_seq: int | None  # the outbox row's seq; None for a table-less event
    committed_at: datetime | None


@dataclass(slots=True)
class Transaction:
    end_lsn: int
    committed_at: datetime | None
    items: list[Item] = field(default_factory=list)


def unreadable(seq: int, what: str, exc: BaseException) -> OutboxEvent:
    """The stand-in event of an input that raised while it was turned into an event (H13).

    Any exception counts, ``RecursionError`` from JSON nested a hundred thousand deep included:
    the input is set aside as a dead letter with the reason, and the relay goes on past it rather
    than failing the whole read, which would read the same input again forever. The reason is
    bounded here; the stores make it storable."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    reason = f"{what} cannot be published: {type(exc).__name__}{': ' + text if text else ''}"
    return OutboxEvent(seq=seq, id=f"unreadable-{seq}", topic="?", payload=b"", defect=reason)
