"""Publish right after commit: only committed rows, never overtaking a key, relay as safety net."""

from __future__ import annotations

from outboxkit import Outbox
from outboxkit.relay.inline import InlinePublisher
from tests.conftest import Backend
from tests.helpers import db_connect, pending, read_all, relay_for, running_relay, wait_drained


def _emit(backend: Backend, topic: str, payload: dict[str, int], key: str, *, commit: bool = True) -> str:
    outbox = Outbox(table=backend.ref.table, schema=backend.ref.schema)
    conn = db_connect(backend.db)
    try:
        conn.execute("BEGIN")
        event_id = outbox.emit(conn, topic, payload, key=key)
        conn.execute("COMMIT" if commit else "ROLLBACK")
    finally:
        conn.close()
    return event_id


async def test_inline_publishes_committed_events_and_never_rolled_back_ones(backend: Backend) -> None:
    topic = backend.stream.topic("inline")
    kept = [_emit(backend, topic, {"i": i}, f"k{i}") for i in range(5)]
    dropped = _emit(backend, topic, {"i": 99}, "k99", commit=False)
    with InlinePublisher(backend.db, backend.stream.url, ref=backend.ref) as inline:
        assert inline.submit([*kept, dropped]).result(30) == 5
    assert pending(backend.db, backend.ref) == 0
    got = await read_all(backend.stream.url, backend.stream.name, expect=5)
    assert sorted(m.event_id for m in got) == sorted(kept)


async def test_inline_leaves_a_key_to_the_relay_when_an_earlier_event_is_pending(backend: Backend) -> None:
    topic = backend.stream.topic("inline")
    first = _emit(backend, topic, {"n": 1}, "k")  # committed, not yet published by anyone
    second = _emit(backend, topic, {"n": 2}, "k")
    with InlinePublisher(backend.db, backend.stream.url, ref=backend.ref) as inline:
        assert inline.submit([second]).result(30) == 0, "publishing it now would overtake the first"
        assert inline.left_to_relay == 1
    async with running_relay(relay_for(backend.db, backend.stream.url, backend.ref)):
        await wait_drained(backend.db, backend.ref)
    got = await read_all(backend.stream.url, backend.stream.name, expect=2)
    assert [m.event_id for m in got] == [first, second]
