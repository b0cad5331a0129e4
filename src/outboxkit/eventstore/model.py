"""The event store's values: events to append, events as stored, positions, expected versions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

#: Expected version: append whatever the stream's version is.
ANY: Final = "any"
#: Expected version: the stream must not exist yet (the same as expecting version 0).
NO_STREAM: Final = "no_stream"

#: ``expected`` of an append: :data:`ANY`, :data:`NO_STREAM`, or the exact version the writer read
#: (0 for a stream with no events).
Expected = int | Literal["any", "no_stream"]


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its type, its data (encoded by the store's encoder, JSON by default)
    and optional headers (travel as message headers; the stream id and version are added)."""

    type: str
    data: Any
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, order=True)
class Position:
    """A place in the global order of all streams' events: ``(tx, seq)``. ``tx`` is the writing
    transaction on PostgreSQL (0 on SQLite); positions only grow for a reader (H1-safe)."""

    tx: int = 0
    seq: int = 0


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored: one row of the event store table, which is also an outbox row."""

    id: str
    stream_id: str
    version: int
    type: str
    data: bytes
    content_type: str
    headers: dict[str, str]
    created_at: datetime | str
    position: Position
    topic: str = field(default="")

    def json(self) -> Any:
        """The data decoded as JSON."""
        return json.loads(self.data)


@dataclass(frozen=True)
class AppendResult:
    """What an append wrote: the stream's new version and the new events' ids, in order."""

    stream_id: str
    version: int
    ids: tuple[str, ...]

    @property
    def first_version(self) -> int:
        return self.version - len(self.ids) + 1
