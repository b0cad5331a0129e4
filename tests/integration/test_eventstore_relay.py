"""One write, published: the relay publishes the event store's table as an outbox (G1, G2, G5),
with the stream id and version as CloudEvents extension attributes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator

import psycopg
import pytest
from cloudevents.v1.http import from_http

from outboxkit.eventstore import NO_STREAM, EventStore, NewEvent, migrate_event_store
from outboxkit.stores.base import TableRef
from outboxkit.testing import NatsServer
from tests.conftest import PG_URL, Stream, drop_stream, make_stream, require, unique
from tests.helpers import read_all, relay_for, running_relay, wait_drained


@pytest.fixture(params=["postgres+nats", "sqlite+embedded-nats"])
async def target(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[tuple[str, TableRef, Stream]]:
    if request.param.startswith("sqlite"):
        server = NatsServer().start()
        request.addfinalizer(server.close)
        url = f"sqlite:///{tmp_path}/events.db"
        ref = TableRef("events")
        migrate_event_store(url, ref)
        yield url, ref, await make_stream(server.url)
        return
    require("PostgreSQL", "127.0.0.1", 5432)
    require("NATS", "127.0.0.1", 4222)
    ref = TableRef("events", unique("oke"))
    migrate_event_store(PG_URL, ref)
    stream = await make_stream("nats://127.0.0.1:4222")
    try:
        yield PG_URL, ref, stream
    finally:
        await drop_stream(stream)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


async def test_relay_publishes_appended_events_with_stream_attributes(target: tuple[str, TableRef, Stream]) -> None:
    url, ref, stream = target
    store = EventStore(table=ref.table, schema=ref.schema, topic=stream.topic("orders"), source="/tests/orders")
    conn = sqlite3.connect(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else psycopg.connect(url)
    try:
        for n in range(3):
            conn.execute("BEGIN")
            store.append(conn, f"order-{n}", [NewEvent("OrderPlaced", {"n": n})], expected=NO_STREAM)
            store.append(conn, f"order-{n}", [NewEvent("ItemAdded", {"n": n, "i": i}) for i in range(3)], expected=1)
            conn.execute("COMMIT")
        conn.execute("BEGIN")
        store.append(conn, "order-9", [NewEvent("OrderPlaced", {"n": 9})], expected=NO_STREAM)
        conn.execute("ROLLBACK")  # G2: never published
    finally:
        conn.close()
    async with running_relay(relay_for(url, stream.url, ref)):
        await wait_drained(url, ref)
    got = await read_all(stream.url, stream.name, expect=12)
    assert len(got) == 12
    for n in range(3):
        mine = [m for m in got if m.key == f"order-{n}"]
        # Per-stream order (G5), and the version visible without parsing the body.
        assert [m.headers["ce-streamversion"] for m in mine] == ["1", "2", "3", "4"]
        assert {m.headers["ce-streamid"] for m in mine} == {f"order-{n}"}
        assert [json.loads(m.payload).get("i") for m in mine] == [None, 0, 1, 2]
    event = from_http(dict(got[0].headers), got[0].payload)  # the official SDK sees the attributes
    assert event["type"] == "OrderPlaced"
    assert event["source"] == "/tests/orders"
    assert event["streamid"] == "order-0" and event["streamversion"] == "1"
    assert event["subject"] == "order-0"
