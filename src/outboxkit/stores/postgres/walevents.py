"""From decoded pgoutput records to outbox events, transaction by transaction (pure, no I/O).

An outbox row decoded from the log is checked with the same rules as a row the table relay reads
(``core.rows.event_from_row``, H11), and a table-less message with ``core.walmessage``. Rows the
relay itself wrote as dead letters (``dead_at`` set) are skipped. Each event gets a ``seq`` that
grows in log order (the relay's dispatcher orders keys by it); the outbox row's own ``seq`` is kept
beside it for the mark.

Traffic that is not ours must never pin the slot (H13, H4). A non-transactional logical message
(``pg_logical_emit_message(false, ...)``, the shape of many CDC heartbeats) is decoded outside any
transaction: it becomes an empty :class:`Transaction` ending at the message's position, so the
relay advances past it like past any finished transaction, however many arrive. One with this
outbox's own prefix is not trusted — it was written even if its transaction rolled back (G2) — so
it becomes a dead letter saying so, never a published event. Any exception met while turning one
change into an event becomes that change's dead letter (``core.tailing.unreadable``), never a
failed read.

Column values arrive as text, or (a streaming reader with ``binary``) in their types' binary send
formats: ``_values`` reads both into the shapes ``event_from_row`` takes (ints, bytes, text,
datetimes), so the same row gives the same event either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from outboxkit.core import walmessage
from outboxkit.core.rows import event_from_row
from outboxkit.core.tailing import Item, Transaction, unreadable
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.pgoutput import Begin, Commit, Insert, Message, Relation, binary_value, decode

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
            try:
                record = decode(data)
            except Exception as exc:
                if committed_at is None:
                    raise  # outside a transaction its end cannot be told: the relay narrows it down
                # A change of a transaction that this decoder cannot parse: a dead letter of its own.
                self.counter += 1
                items.append(Item(unreadable(self.counter, "a change of the log", exc), None, committed_at))
                continue
            if isinstance(record, Begin):
                items, committed_at = [], record.committed_at
            elif isinstance(record, Relation):
                self.relations[record.relid] = record
            elif isinstance(record, Insert):
                relation = self.relations.get(record.relid)
                if relation is not None and self._ours(relation):
                    row = self._row(relation, record, committed_at)
                    if row is not None:
                        items.append(row)
            elif isinstance(record, Message):
                if record.transactional:
                    if record.prefix == self.prefix:
                        self.counter += 1
                        event = walmessage.decode(self.counter, record.content, committed_at)
                        items.append(Item(event, None, committed_at))
                else:
                    # Decoded where it was written, outside every transaction: done once seen.
                    # The message's position is the end of its record, so the slot moves past it.
                    out.append(Transaction(record.lsn, None, self._untrusted(record)))
            elif isinstance(record, Commit):
                out.append(Transaction(record.end_lsn, committed_at, items))
                items, committed_at = [], None
        return out

    def unit_end(self, messages: Sequence[bytes]) -> int | None:
        """The end of the last transaction or non-transactional message in ``messages``."""
        for data in reversed(messages):
            with contextlib.suppress(Exception):
                record = decode(data)
                if isinstance(record, Commit):
                    return record.end_lsn
                if isinstance(record, Message) and not record.transactional:
                    return record.lsn
        return None

    def _untrusted(self, record: Message) -> list[Item]:
        """A non-transactional message: nothing when it is another tool's, a dead letter when it
        carries this outbox's prefix (it survives a rollback, so it may report nothing that
        happened; writers use ``walemit``, which emits transactional messages)."""
        if record.prefix != self.prefix:
            return []
        self.counter += 1
        event = walmessage.decode(self.counter, record.content, None)
        reason = (
            "a non-transactional message with this outbox's prefix is not trusted (it is written even "
            "when its transaction rolls back): emit with outboxkit.walemit or pg_logical_emit_message(true, ...)"
        )
        if event.defect is not None:
            reason = f"{reason}; besides, {event.defect}"
        # The key is not held: a message that may never have happened must not stop a key's events.
        return [Item(replace(event, key=None, defect=f"{reason} (key {event.key!r:.80})"), None, None)]

    def _row(self, relation: Relation, record: Insert, committed_at: datetime | None) -> Item | None:
        try:
            return self._event_of(relation, record, committed_at)
        except Exception as exc:  # H13: whatever the row held, it costs only itself
            self.counter += 1
            seq = _seq_of(relation, record)
            return Item(unreadable(self.counter, f"row {seq!r:.40}", exc), seq, committed_at)

    def _event_of(self, relation: Relation, record: Insert, committed_at: datetime | None) -> Item | None:
        values = _values(relation, record)
        if values.get("dead_at") is not None:
            return None  # a dead letter the relay wrote itself
        self.counter += 1
        try:
            seq = values["seq"]
            row_seq: int | None = seq if isinstance(seq, int) else int(str(seq or ""))
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
            _count(attempts),
        )
        if row_seq is None and event.defect is None:
            # Without its seq the row cannot be marked; the outbox table has one, so the relation
            # is not the outbox this relay was started for.
            return None
        return Item(event, row_seq, committed_at)


def _values(relation: Relation, record: Insert) -> dict[str, object]:
    """The row by column name; binary values (bytes) read by their column's type."""
    values: dict[str, object] = dict(zip(relation.columns, record.values, strict=False))
    for column, oid in zip(relation.columns, relation.types, strict=False):
        value = values.get(column)
        if type(value) is bytes:  # only a binary stream sends bytes; text and NULL stay as they are
            values[column] = binary_value(oid, value)
    return values


def _count(value: object) -> int:
    """``attempts`` as an int (binary) or digits (text); anything else counts as none."""
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def _seq_of(relation: Relation, record: Insert) -> int | None:
    """The row's seq for a dead letter, read as leniently as possible (the row failed to decode)."""
    with contextlib.suppress(Exception):
        at = relation.columns.index("seq")
        seq: object = record.values[at]
        if isinstance(seq, bytes):  # the seq alone: another column may be what failed
            seq = binary_value(relation.types[at], seq)
        if isinstance(seq, int):
            return seq
        if isinstance(seq, str) and seq.isdigit():
            return int(seq)
    return None
