"""From decoded pgoutput records to outbox events, transaction by transaction (pure, no I/O).

An outbox row decoded from the log is checked with the same rules as a row the table relay reads
(``core.rows.event_from_row``, H11), and a table-less message with ``core.walmessage``. Rows the
relay itself wrote as dead letters (``dead_at`` set) are skipped. Each event gets a ``seq`` that
grows in log order (the relay's dispatcher orders keys by it); the outbox row's own ``seq`` is kept
beside it for the mark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime

from outboxkit.core import walmessage
from outboxkit.core.rows import event_from_row
from outboxkit.core.tailing import Item, Transaction
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.pgoutput import Begin, Commit, Insert, Message, Relation, decode

_FIELDS = ("seq", "id", "topic", "key", "type", "source", "payload", "content_type", "headers", "created_at")


__all__ = ["Decoder", "Item", "Transaction"]


class Decoder:
    """Turns pgoutput messages into transactions of events. One per relay session (it remembers
    relations, and numbers events so that ``seq`` keeps growing across peeks)."""

    def __init__(self, ref: TableRef, prefix: str | None = None) -> None:
        self.ref = ref
        self.prefix = prefix or walmessage.prefix_for(ref.table, ref.schema)
        self.relations: dict[int, Relation] = {}
        self.counter = 0

    def _ours(self, relation: Relation) -> bool:
        return relation.name == self.ref.table and relation.namespace == (self.ref.schema or relation.namespace)

    def transactions(self, messages: Iterable[bytes]) -> list[Transaction]:
        out: list[Transaction] = []
        items: list[Item] = []
        committed_at: datetime | None = None
        for data in messages:
            record = decode(data)
            if isinstance(record, Begin):
                items, committed_at = [], record.committed_at
            elif isinstance(record, Relation):
                self.relations[record.relid] = record
            elif isinstance(record, Insert):
                relation = self.relations.get(record.relid)
                if relation is not None and self._ours(relation):
                    item = self._row(relation, record, committed_at)
                    if item is not None:
                        items.append(item)
            elif isinstance(record, Message):
                if record.transactional and record.prefix == self.prefix:
                    self.counter += 1
                    event = walmessage.decode(self.counter, record.content, committed_at)
                    items.append(Item(event, None, committed_at))
            elif isinstance(record, Commit):
                out.append(Transaction(record.end_lsn, committed_at, items))
                items = []
        return out

    def _row(self, relation: Relation, record: Insert, committed_at: datetime | None) -> Item | None:
        values = dict(zip(relation.columns, record.values, strict=False))
        if values.get("dead_at") is not None:
            return None  # a dead letter the relay wrote itself
        self.counter += 1
        try:
            row_seq: int | None = int(values["seq"] or "")
        except (KeyError, ValueError):
            row_seq = None
        payload: object = values.get("payload")
        if isinstance(payload, str) and payload.startswith("\\x"):
            with contextlib.suppress(ValueError):  # not hex: event_from_row makes it a dead letter
                payload = bytes.fromhex(payload[2:])
        attempts = values.get("attempts")
        event = event_from_row(
            self.counter,
            values.get("id"),
            values.get("topic"),
            values.get("key"),
            values.get("type"),
            values.get("source"),
            payload,
            values.get("content_type"),
            values.get("headers"),
            values.get("created_at"),
            int(attempts) if attempts and attempts.isdigit() else 0,
        )
        if row_seq is None and event.defect is None:
            # Without its seq the row cannot be marked; the outbox table has one, so the relation
            # is not the outbox this relay was started for.
            return None
        return Item(event, row_seq, committed_at)
