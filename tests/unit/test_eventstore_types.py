"""EventTypes and Aggregate without a database: names, versions, upcasting chains, refusals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from outboxkit.eventstore import Aggregate, EventTypes, Position, RecordedEvent, UnknownEventError


@dataclass(frozen=True)
class Renamed:
    full_name: str


def _recorded(type_: str, data: bytes, headers: dict[str, str]) -> RecordedEvent:
    return RecordedEvent("id", "s-1", 1, type_, data, "application/json", headers, datetime.now(UTC), Position(0, 1))


def test_encode_carries_name_and_version() -> None:
    types = EventTypes().register(Renamed, "CustomerRenamed", version=3, upcasters={1: dict, 2: dict})
    new = types.encode(Renamed("Ada Lovelace"))
    assert (new.type, new.data, new.headers) == (
        "CustomerRenamed",
        {"full_name": "Ada Lovelace"},
        {"eventversion": "3"},
    )


def test_upcasters_run_in_order_from_the_stored_version() -> None:
    calls: list[int] = []

    def v1(d: dict[str, object]) -> dict[str, object]:
        calls.append(1)
        return {"first": d["name"], "last": ""}

    def v2(d: dict[str, object]) -> dict[str, object]:
        calls.append(2)
        return {"full_name": f"{d['first']} {d['last']}".strip()}

    types = EventTypes().register(Renamed, "CustomerRenamed", version=3, upcasters={1: v1, 2: v2})
    assert types.decode(_recorded("CustomerRenamed", b'{"name":"Ada"}', {})) == Renamed("Ada")
    assert calls == [1, 2]
    calls.clear()
    got = types.decode(_recorded("CustomerRenamed", b'{"first":"A","last":"L"}', {"eventversion": "2"}))
    assert got == Renamed("A L") and calls == [2]
    calls.clear()
    assert types.decode(_recorded("CustomerRenamed", b'{"full_name":"X"}', {"eventversion": "3"})) == Renamed("X")
    assert calls == []


def test_refusals() -> None:
    with pytest.raises(ValueError, match="no upcaster from version 2"):
        EventTypes().register(Renamed, version=3, upcasters={1: dict})
    types = EventTypes().register(Renamed)
    with pytest.raises(ValueError, match="registered twice"):
        types.register(Renamed, "Other")
    with pytest.raises(UnknownEventError, match="unknown type 'Nope'"):
        types.decode(_recorded("Nope", b"{}", {}))
    with pytest.raises(UnknownEventError, match="not registered"):
        types.encode(object())


def test_aggregate_records_and_applies() -> None:
    class Counter(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.n = 0

        def apply(self, event: object) -> None:
            self.n += 1

    c = Counter("c-1")
    c.record(Renamed("x"))
    c.record(Renamed("y"))
    assert (c.n, len(c.pending), c.version) == (2, 2, 0)
    assert c.snapshot_state() == {"n": 2}
    fresh = Counter("c-1")
    fresh.restore({"n": 7})
    assert fresh.n == 7
    with pytest.raises(NotImplementedError):
        Aggregate("a").apply(object())


def test_the_event_store_surface() -> None:
    import outboxkit.eventstore as es

    assert set(es.__all__) == {
        "ANY", "NO_STREAM", "Aggregate", "AppendResult", "ConcurrencyError", "EventStore", "EventTypes",
        "Expected", "NewEvent", "Position", "Projection", "ProjectionRunner", "ProjectionStatus",
        "RecordedEvent", "Repository", "UnknownEventError", "event_store_sql_text", "migrate_event_store",
        "projection_statuses",
    }  # fmt: skip
    assert all(getattr(es, name) is not None for name in es.__all__)
