"""EventStore: streams with optimistic concurrency, appended in the caller's own transaction.

The store's table is an outbox table with three more columns (``stream_id``, ``version``, ``tx``):
an appended event is stored once, and ``outboxkit relay --table <table>`` publishes it with the
usual envelope and guarantees (G1-G8): no second write, no dual write. Its key is the stream id, so
the relay keeps each stream's order (G5); the stream id and version ride as the ``streamid`` and
``streamversion`` headers (CloudEvents extension attributes).

Like ``emit()``, an append never commits and never opens a transaction; a refused append (bad
input, ConcurrencyError) writes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from outboxkit.core.envelope import (
    DEFAULT_MAX_PAYLOAD,
    Encoder,
    encode_payload,
    json_encoder,
    new_event_id,
    validate_headers,
    validate_topic,
)
from outboxkit.errors import EmitError
from outboxkit.eventstore import plans
from outboxkit.eventstore.connection import async_runner, run_async, run_sync, sync_runner
from outboxkit.eventstore.model import AppendResult, Expected, NewEvent, Position, RecordedEvent
from outboxkit.eventstore.sql import Statements, event_store_sql
from outboxkit.stores.base import TableRef

#: "The end of the stream" for reading backward, and "no limit" for reading a whole stream.
_MAX = 2**62
#: The position before every event.
START = Position()


class EventStore:
    """Streams of events in one table (default ``events``) that the relay can publish.

    >>> store = EventStore(table="events", topic="orders")
    >>> # with conn.transaction():
    >>> #     store.append(conn, "order-42", [NewEvent("OrderPlaced", {"total": 30})], expected=NO_STREAM)
    """

    def __init__(
        self,
        *,
        table: str = "events",
        schema: str | None = None,
        topic: str | Callable[[str], str] = "events",
        source: str | None = None,
        encoder: Encoder = json_encoder,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.ref = TableRef(table, schema)
        if isinstance(topic, str):
            validate_topic(topic)
        self.topic = topic
        self.source = source
        self.encoder = encoder
        self.max_payload = max_payload
        self._statements: dict[str, Statements] = {}

    def statements(self, dialect: str) -> Statements:
        st = self._statements.get(dialect)
        if st is None:
            st = self._statements[dialect] = Statements.build(event_store_sql(dialect), self.ref)
        return st

    # -- building rows (pure) --------------------------------------------------------------------
    def _topic_of(self, stream_id: str) -> str:
        if isinstance(self.topic, str):
            return self.topic
        return validate_topic(self.topic(stream_id))

    def _encode(self, stream_id: str, events: NewEvent | Sequence[NewEvent]) -> list[plans.Encoded]:
        if not isinstance(stream_id, str) or not stream_id or len(stream_id) > 255:
            raise EmitError("stream_id must be a non-empty str of at most 255 characters")
        batch = [events] if isinstance(events, NewEvent) else list(events)
        if not batch:
            raise EmitError("append needs at least one event")
        topic = self._topic_of(stream_id)
        trace = _trace_headers()
        out = []
        for event in batch:
            if not isinstance(event, NewEvent):
                raise EmitError(f"append takes NewEvent objects, not {type(event).__name__}")
            if not isinstance(event.type, str) or not event.type:
                raise EmitError("an event's type must be a non-empty str")
            data, content_type = encode_payload(event.data, self.encoder, max_bytes=self.max_payload)
            headers = {**trace, **validate_headers(event.headers)}
            out.append(plans.Encoded(new_event_id(), topic, event.type, self.source, data, content_type, headers))
        return out

    # -- sync ------------------------------------------------------------------------------------
    def append(
        self, conn: Any, stream_id: str, events: NewEvent | Sequence[NewEvent], *, expected: Expected
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` in ``conn``'s open transaction, if the stream is at
        ``expected`` (a version, 0 or :data:`NO_STREAM` for a new stream, or :data:`ANY`).

        Raises :class:`~outboxkit.errors.ConcurrencyError` when another writer got there first;
        a writer of the same stream waits for the other's transaction to end before it knows.
        """
        expected = plans.check_expected(expected)
        encoded = self._encode(stream_id, events)
        dialect, run = sync_runner(conn, write=True)
        return run_sync(plans.append(self.statements(dialect), stream_id, encoded, expected), run)

    def read_stream(
        self, conn: Any, stream_id: str, *, start: int | None = None, limit: int | None = None, backward: bool = False
    ) -> list[RecordedEvent]:
        """The stream's events in one query: forward from version ``start`` (default 1), or
        backward from ``start`` (default the last), at most ``limit`` (default all)."""
        dialect, run = sync_runner(conn, write=False)
        return run_sync(self._read_stream(dialect, stream_id, start, limit, backward), run)

    def read_all(self, conn: Any, after: Position = START, *, limit: int = 1000) -> list[RecordedEvent]:
        """Events of every stream after ``after`` in the global order, never skipping a late
        commit (H1): an event of a transaction still open is returned later, never passed over."""
        dialect, run = sync_runner(conn, write=False)
        st = self.statements(dialect)
        return run_sync(plans.read(st.read_all, (after.tx, after.seq, _limit(limit))), run)

    def stream_version(self, conn: Any, stream_id: str) -> int:
        """The stream's version (its number of events); 0 when it does not exist."""
        dialect, run = sync_runner(conn, write=False)
        return int(run_sync(plans.scalar(self.statements(dialect).head_get, (stream_id,)), run) or 0)

    # -- async -----------------------------------------------------------------------------------
    async def append_async(
        self, conn: Any, stream_id: str, events: NewEvent | Sequence[NewEvent], *, expected: Expected
    ) -> AppendResult:
        """The awaitable twin of :meth:`append` (psycopg AsyncConnection, SQLAlchemy async)."""
        expected = plans.check_expected(expected)
        encoded = self._encode(stream_id, events)
        dialect, run = await async_runner(conn, write=True)
        return await run_async(plans.append(self.statements(dialect), stream_id, encoded, expected), run)

    async def read_stream_async(
        self, conn: Any, stream_id: str, *, start: int | None = None, limit: int | None = None, backward: bool = False
    ) -> list[RecordedEvent]:
        dialect, run = await async_runner(conn, write=False)
        return await run_async(self._read_stream(dialect, stream_id, start, limit, backward), run)

    async def read_all_async(self, conn: Any, after: Position = START, *, limit: int = 1000) -> list[RecordedEvent]:
        dialect, run = await async_runner(conn, write=False)
        st = self.statements(dialect)
        return await run_async(plans.read(st.read_all, (after.tx, after.seq, _limit(limit))), run)

    async def stream_version_async(self, conn: Any, stream_id: str) -> int:
        dialect, run = await async_runner(conn, write=False)
        return int(await run_async(plans.scalar(self.statements(dialect).head_get, (stream_id,)), run) or 0)

    # -- shared ----------------------------------------------------------------------------------
    def _read_stream(
        self, dialect: str, stream_id: str, start: int | None, limit: int | None, backward: bool
    ) -> plans.Plan[list[RecordedEvent]]:
        st = self.statements(dialect)
        count = _MAX if limit is None else _limit(limit)
        if backward:
            return plans.read(st.read_backward, (stream_id, _MAX if start is None else start, count))
        return plans.read(st.read_forward, (stream_id, 1 if start is None else start, count))


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, not {limit!r}")
    return limit


def _trace_headers() -> Mapping[str, str]:
    if "opentelemetry" not in sys.modules:
        return {}
    from outboxkit.emit import _trace_headers as trace

    return trace()
