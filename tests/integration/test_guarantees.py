"""G1-G5 on both embedded defaults and the production pair: SQLite + embedded NATS, PostgreSQL + NATS."""

from __future__ import annotations

import asyncio
import json

from cloudevents.v1.http import from_http

from outboxkit import Outbox
from outboxkit.brokers.nats import connect, ensure_stream
from tests.conftest import Backend
from tests.helpers import db_connect, emit_many, pending, read_all, relay_for, running_relay, wait_drained


async def test_g1_every_committed_event_is_published(backend: Backend) -> None:
    topic = backend.stream.topic("orders")
    ids = emit_many(backend.db, backend.ref, topic, [{"i": i} for i in range(300)], key=lambda i: f"k{i % 7}")
    async with running_relay(relay_for(backend.db, backend.stream.url, backend.ref)):
        await wait_drained(backend.db, backend.ref)
    got = await read_all(backend.stream.url, backend.stream.name, expect=len(ids))
    assert sorted(m.event_id for m in got) == sorted(ids)
    assert [json.loads(m.payload)["i"] for m in got if m.key == "k0"] == list(range(0, 300, 7))


async def test_g2_rolled_back_events_are_never_published(backend: Backend) -> None:
    outbox = Outbox(table=backend.ref.table, schema=backend.ref.schema)
    topic = backend.stream.topic("orders")
    conn = db_connect(backend.db)
    kept, dropped = [], []
    try:
        for i in range(100):
            conn.execute("BEGIN")
            event_id = outbox.emit(conn, topic, {"i": i}, key=f"k{i % 5}")
            if i % 3 == 0:
                conn.execute("ROLLBACK")
                dropped.append(event_id)
            else:
                conn.execute("COMMIT")
                kept.append(event_id)
    finally:
        conn.close()
    async with running_relay(relay_for(backend.db, backend.stream.url, backend.ref)):
        await wait_drained(backend.db, backend.ref)
    got = {m.event_id for m in await read_all(backend.stream.url, backend.stream.name, expect=len(kept))}
    assert got == set(kept)
    assert not got & set(dropped)


async def test_g3_unconfirmed_events_are_not_marked(backend: Backend) -> None:
    """A subject no stream captures gets no PubAck: the row stays pending with the error recorded,
    and is delivered once a stream exists."""
    unrouted = f"{backend.stream.prefix}_late.orders"
    ids = emit_many(backend.db, backend.ref, unrouted, [{"i": i} for i in range(5)])
    async with running_relay(relay_for(backend.db, backend.stream.url, backend.ref)) as running:
        await asyncio.sleep(1.0)
        assert pending(backend.db, backend.ref) == 5
        assert running.relay.stats.published == 0
        conn = db_connect(backend.db)
        try:
            errors = conn.execute(f"SELECT attempts, last_error FROM {backend.table}").fetchall()
        finally:
            conn.close()
        assert all(a >= 1 and "no JetStream stream" in e for a, e in errors)
        nc = await connect(backend.stream.url)
        try:
            await ensure_stream(nc, backend.stream.name + "_LATE", [f"{backend.stream.prefix}_late.>"])
            await wait_drained(backend.db, backend.ref, timeout=60)
            got = await read_all(backend.stream.url, backend.stream.name + "_LATE", expect=5)
            assert [m.event_id for m in got] == ids
        finally:
            await nc.jetstream().delete_stream(backend.stream.name + "_LATE")
            await nc.close()


async def test_g4_id_travels_as_cloudevent_and_dedupe_id(backend: Backend) -> None:
    topic = backend.stream.topic("orders")
    outbox = Outbox(table=backend.ref.table, schema=backend.ref.schema, source="/tests/orders")
    conn = db_connect(backend.db)
    try:
        conn.execute("BEGIN")
        event_id = outbox.emit(
            conn,
            topic,
            {"total": 12},
            key="cust-1",
            headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
            type="com.example.order.created",
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    relay = relay_for(backend.db, backend.stream.url, backend.ref)
    async with running_relay(relay):
        await wait_drained(backend.db, backend.ref)
    # A crash between PubAck and mark: the row is pending again and is re-sent with the same id.
    conn = db_connect(backend.db)
    try:
        conn.execute(f"UPDATE {backend.table} SET delivered_at = NULL")
    finally:
        conn.close()
    async with running_relay(relay_for(backend.db, backend.stream.url, backend.ref)) as again:
        await wait_drained(backend.db, backend.ref)
        assert again.relay.stats.published == 1
    got = await read_all(backend.stream.url, backend.stream.name, idle=1.0)
    assert len(got) == 1, "JetStream drops the re-sent copy by Nats-Msg-Id"
    msg = got[0]
    assert msg.headers["Nats-Msg-Id"] == event_id
    event = from_http(dict(msg.headers), msg.payload)  # the official SDK reads what we publish
    assert event["id"] == event_id
    assert event["specversion"] == "1.0"
    assert event["type"] == "com.example.order.created"
    assert event["source"] == "/tests/orders"
    assert event["subject"] == "cust-1"
    assert event["datacontenttype"] == "application/json"
    assert event["traceparent"] == "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    assert event.data == {"total": 12}


async def test_g5_later_event_of_a_key_waits_for_the_earlier_confirmation(backend: Backend) -> None:
    """Key k's first event cannot be confirmed yet (no stream for its subject); its second event
    is routable but must not overtake it. Other keys flow meanwhile."""
    late_prefix = f"{backend.stream.prefix}_hold"
    first = emit_many(backend.db, backend.ref, f"{late_prefix}.a", [{"n": 1}], key=lambda _: "k")[0]
    second = emit_many(backend.db, backend.ref, backend.stream.topic("b"), [{"n": 2}], key=lambda _: "k")[0]
    other = emit_many(backend.db, backend.ref, backend.stream.topic("b"), [{"n": 1}], key=lambda _: "other")[0]
    async with running_relay(relay_for(backend.db, backend.stream.url, backend.ref)):
        got = await read_all(backend.stream.url, backend.stream.name, expect=1, idle=1.5)
        assert [m.event_id for m in got] == [other], "k's second event overtook its first"
        nc = await connect(backend.stream.url)
        try:
            await ensure_stream(nc, backend.stream.name + "_HOLD", [f"{late_prefix}.>"])
            await wait_drained(backend.db, backend.ref, timeout=60)
            held = await read_all(backend.stream.url, backend.stream.name + "_HOLD", expect=1)
            main = await read_all(backend.stream.url, backend.stream.name, expect=2)
            info_first = await nc.jetstream().get_msg(backend.stream.name + "_HOLD", 1)
            second_seq = next(i + 1 for i, m in enumerate(main) if m.event_id == second)
            info_second = await nc.jetstream().get_msg(backend.stream.name, second_seq)
        finally:
            await nc.jetstream().delete_stream(backend.stream.name + "_HOLD")
            await nc.close()
    assert held[0].event_id == first
    assert info_first.headers["ce-id"] == first and info_second.headers["ce-id"] == second
    assert _stored_at(info_first) <= _stored_at(info_second)


def _stored_at(raw: object) -> str:
    # RawStreamMsg.time is the server's storage timestamp (RFC 3339, nanoseconds).
    value = getattr(raw, "time", None)
    assert value is not None
    return str(value)
