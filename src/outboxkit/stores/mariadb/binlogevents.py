"""From binlog row events to outbox events, transaction by transaction (pure, no I/O).

The binlog reader (``binlog.py``) hands over each committed transaction's inserted outbox rows
as ``{column: value}`` dicts (the server logs column names with ``binlog_row_metadata=FULL``).
A row is checked with the same rules as a row the table relay reads (``core.rows.event_from_row``,
H11); rows the relay itself wrote as dead letters (``dead_at`` set) are skipped, and a row that
raises while it is read becomes a dead letter with the reason (H13). Transactions without outbox
rows never get here: the reader moves the position past them itself. Each event gets
a ``seq`` that grows in log order (the relay's dispatcher orders keys by it); the row's own
``seq`` is kept beside it for the mark.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from outboxkit.core.rows import event_from_row
from outboxkit.core.tailing import Item, Transaction, unreadable


@dataclass(slots=True)
class RawTransaction:
    """One committed transaction as the stream thread saw it: its position token and its rows."""

    lsn: int
    committed_at: datetime | None
    rows: list[dict[str, Any]] = field(default_factory=list)


class BinlogDecoder:
    """One per relay session: numbers events so that ``seq`` keeps growing across peeks."""

    def __init__(self) -> None:
        self.counter = 0

    def transactions(self, messages: Sequence[RawTransaction]) -> list[Transaction]:
        out: list[Transaction] = []
        for raw in messages:
            items = [item for item in (self._row(values, raw.committed_at) for values in raw.rows) if item]
            out.append(Transaction(raw.lsn, raw.committed_at, items))
        return out

    def unit_end(self, messages: Sequence[RawTransaction]) -> int | None:
        return messages[-1].lsn if messages else None

    def _row(self, values: dict[str, Any], committed_at: datetime | None) -> Item | None:
        try:
            return self._event_of(values, committed_at)
        except Exception as exc:  # H13: whatever the row held, it costs only itself
            self.counter += 1
            seq = values.get("seq") if isinstance(values, dict) else None
            row_seq = seq if isinstance(seq, int) else None
            return Item(unreadable(self.counter, f"row {seq!r:.40}", exc), row_seq, committed_at)

    def _event_of(self, values: dict[str, Any], committed_at: datetime | None) -> Item | None:
        if values.get("dead_at") is not None:
            return None  # a dead letter the relay wrote itself
        self.counter += 1
        seq = values.get("seq")
        row_seq = seq if isinstance(seq, int) else None
        created_at = values.get("created_at")
        if isinstance(created_at, datetime) and created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)  # DATETIME(6) columns hold UTC
        headers = values.get("headers")
        if isinstance(headers, dict | list):  # MySQL's binary JSON arrives parsed
            headers = json.dumps(headers)
        elif isinstance(headers, bytes):
            headers = headers.decode("utf-8", "replace")
        attempts = values.get("attempts")
        event = event_from_row(
            self.counter,
            values.get("id"),
            values.get("topic"),
            values.get("key"),
            values.get("type"),
            values.get("source"),
            values.get("payload"),
            values.get("content_type"),
            headers,
            created_at,
            attempts if isinstance(attempts, int) else 0,
        )
        if row_seq is None and event.defect is None:
            return None  # no seq: not the outbox table this relay was started for
        return Item(event, row_seq, committed_at)
