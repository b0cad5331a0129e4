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
