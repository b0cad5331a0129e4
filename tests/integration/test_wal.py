"""``relay --capture wal``: PostgreSQL logical decoding, with table rows and table-less messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import psycopg
import pytest

from outboxkit import Outbox
from outboxkit.relay import RelayConfig
from outboxkit.relay.tail import TailRelay, build_tail_relay
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.wal import drop_slot, migrate_wal, slot_info, slot_name
from outboxkit.walemit import MessageOutbox
from tests.conftest import Stream
from tests.helpers import pending, read_all


@pytest.fixture
def wal_ref(pg_url: str, pg_ref: TableRef) -> Iterator[TableRef]:
    """The test's outbox with its publication and slot; the slot is dropped after the test."""
    migrate_wal(pg_url, pg_ref)
    yield pg_ref
    drop_slot(pg_url, pg_ref, slot_name(pg_ref))


def tail_relay(db: str, broker: str, ref: TableRef, **config: object) -> TailRelay:
    settings: dict[str, object] = {"poll_interval": 0.05, "lease_ttl": 2.0, **config}
    return build_tail_relay(db, broker, ref=ref, config=RelayConfig(**settings))  # type: ignore[arg-type]


async def relay_until(relay: TailRelay, done: object, timeout: float = 30.0) -> None:
    """Run ``relay`` until ``done()`` is true (polled), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(done):  # type: ignore[arg-type]
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_commit_order_rollbacks_and_messages(pg_url: str, wal_ref: TableRef, nats_stream: Stream) -> None:
    """A transaction that took its seq first and committed last comes last; a rollback never comes;
    table-less messages come at their transaction's place; table rows are marked delivered."""
    topic = nats_stream.topic("orders")
    outbox = Outbox(table=wal_ref.table, schema=wal_ref.schema)
    messages = MessageOutbox(table=wal_ref.table, schema=wal_ref.schema)
    with psycopg.connect(pg_url, autocommit=True) as early, psycopg.connect(pg_url, autocommit=True) as conn:
        early.execute("BEGIN")
        late_id = outbox.emit(early, topic, {"n": "late"}, key="k")  # takes the lowest seq
        order = []
        for i in range(5):
            conn.execute("BEGIN")
            order.append(outbox.emit(conn, topic, {"n": i}, key="k"))
            order.append(messages.emit(conn, topic, {"m": i}, key="k", headers={"h": "v"}))
            conn.execute("COMMIT")
        conn.execute("BEGIN")
        rolled = [outbox.emit(conn, topic, {"n": "x"}, key="k"), messages.emit(conn, topic, {"m": "x"}, key="k")]
        conn.execute("ROLLBACK")
        early.execute("COMMIT")
        order.append(late_id)
    relay = tail_relay(pg_url, nats_stream.url, wal_ref)
    await relay_until(relay, lambda: relay.stats.published >= len(order))
    got = await read_all(nats_stream.url, nats_stream.name, expect=len(order))
    assert [m.event_id for m in got] == order
    assert not {m.event_id for m in got} & set(rolled)
    assert json.loads(got[1].payload) == {"m": 0} and got[1].headers.get("h") == "v" and got[1].key == "k"
    assert pending(pg_url, wal_ref) == 0
    info = slot_info(pg_url, slot_name(wal_ref))
    assert info.exists and info.lag_seconds == 0.0


async def test_bad_rows_and_messages_become_dead_letters(pg_url: str, wal_ref: TableRef, nats_stream: Stream) -> None:
    """H11: a row or a message that cannot become a message is a dead letter with the reason; later
    events of its key are held (as dead letters) and every other key flows."""
    topic = nats_stream.topic("orders")
    outbox = Outbox(table=wal_ref.table, schema=wal_ref.schema)
    t = wal_ref.qualified
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {t} (topic, key, payload) VALUES ('bad topic!', 'bad', '\\x00')".encode())
        conn.execute(
            "SELECT pg_logical_emit_message(true, 'outboxkit', convert_to('{\"v\":1,\"topic\":\"x\"}', 'UTF8'))"
        )
        with conn.transaction():
            after_bad = outbox.emit(conn, topic, {"i": 1}, key="bad")
            good = outbox.emit(conn, topic, {"i": 2}, key="good")
    relay = tail_relay(pg_url, nats_stream.url, wal_ref)
    await relay_until(relay, lambda: relay.stats.published + relay.stats.dead_lettered >= 4)
    got = await read_all(nats_stream.url, nats_stream.name, expect=1)
    assert [m.event_id for m in got] == [good]
    with psycopg.connect(pg_url) as conn:
        dead = conn.execute(f"SELECT id::text, last_error FROM {t} WHERE dead_at IS NOT NULL ORDER BY seq".encode())
        rows = dead.fetchall()
    assert len(rows) == 3
    assert "bad topic" in rows[0][1] or "topic" in rows[0][1]
    assert rows[1][0] == after_bad and "held" in rows[1][1]
    assert "message cannot be published" in rows[2][1]
