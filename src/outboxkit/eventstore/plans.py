"""What the event store asks of the database, as generators without I/O.

A plan yields :class:`Query` objects and receives each one's rows; a runner (``connection.py``)
does the I/O, synchronously or with ``await``. One plan serves both, so the sync and async APIs
cannot drift apart (psycopg's generators do the same).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from outboxkit.errors import ConcurrencyError
from outboxkit.eventstore.model import ANY, NO_STREAM, AppendResult, Expected, Position, RecordedEvent
from outboxkit.eventstore.sql import Statements

T = TypeVar("T")


@dataclass(frozen=True)
class Query:
    sql: str
    params: Sequence[Any]
    #: ``params`` is a sequence of parameter tuples, run as one executemany.
    many: bool = False


Rows = list[tuple[Any, ...]]
Plan = Generator[Query, Rows, T]


@dataclass(frozen=True)
class Encoded:
    """An event ready to insert, all checks done (nothing is written before every event passes)."""

    id: str
    topic: str
    type: str
    source: str | None
    data: bytes
    content_type: str
    headers: dict[str, str]


def check_expected(expected: object) -> Expected:
    if expected in (ANY, NO_STREAM):
        return expected
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise ValueError(f"expected must be a version >= 0, ANY or NO_STREAM, not {expected!r}")
    return expected


def append(st: Statements, stream_id: str, events: Sequence[Encoded], expected: Expected) -> Plan[AppendResult]:
    """Move the stream's head by ``len(events)`` from the expected version, then insert the events
    at the versions the head gave; or raise ConcurrencyError having written nothing."""
    k = len(events)
    if expected == ANY:
        head = yield Query(st.head_any, (stream_id, k))
    elif expected == NO_STREAM or expected == 0:
        head = yield Query(st.head_new, (stream_id, k))
    else:
        head = yield Query(st.head_exact, (k, stream_id, expected))
    if not head:
        found = yield Query(st.head_get, (stream_id,))
        raise ConcurrencyError(stream_id, expected, int(found[0][0]) if found else None)
    version = int(head[0][0])
    first = version - k + 1
    rows = []
    for i, event in enumerate(events):
        # Stream id and version travel as headers, which are CloudEvents extension attributes on
        # every bus: a consumer sees them without parsing the body.
        headers = {**event.headers, "streamid": stream_id, "streamversion": str(first + i)}
        rows.append(
            (
                event.id,
                event.topic,
                stream_id,  # the key: the relay keeps per-stream order (G5)
                event.type,
                event.source,
                event.data,
                event.content_type,
                json.dumps(headers, separators=(",", ":")),
                stream_id,
                first + i,
            )
        )
    yield Query(st.insert, rows, many=True)
    return AppendResult(stream_id, version, tuple(e.id for e in events))


def read(sql: str, params: Sequence[Any]) -> Plan[list[RecordedEvent]]:
    rows = yield Query(sql, params)
    return [event_from_row(row) for row in rows]


def scalar(sql: str, params: Sequence[Any]) -> Plan[Any]:
    rows = yield Query(sql, params)
    return rows[0][0] if rows else None


def rows(sql: str, params: Sequence[Any]) -> Plan[Rows]:
    result = yield Query(sql, params)
    return result


def event_from_row(row: Sequence[Any]) -> RecordedEvent:
    """A row of :data:`~outboxkit.eventstore.sql.EVENT_COLUMNS` (PostgreSQL or SQLite types)."""
    id_, stream_id, version, type_, payload, content_type, headers, created_at, tx, seq, topic = row
    if isinstance(headers, str):  # SQLite keeps JSON as text; PostgreSQL's jsonb arrives as a dict
        headers = json.loads(headers)
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    return RecordedEvent(
        id=str(id_),
        stream_id=stream_id,
        version=int(version),
        type=type_ or "",
        data=bytes(payload),
        content_type=content_type,
        headers=dict(headers),
        created_at=created_at,
        position=Position(int(tx), int(seq)),
        topic=topic,
    )
