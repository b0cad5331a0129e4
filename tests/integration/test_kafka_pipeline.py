"""Several events of a key in flight on Kafka (Features.ordered_pipeline): a hot key flows, and a
poison event in the middle of a key stops the key there — nothing after it is published (hold
policy), even though the events after it were already taken for sending."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from outboxkit import migrate
from outboxkit.brokers.kafka.consumer import read_topics
from outboxkit.relay import RelayConfig
from outboxkit.relay.process import build_relay
from outboxkit.stores.base import TableRef
from outboxkit.testing.kafka_server import TansuServer
from tests.conftest import unique
from tests.helpers import db_connect, emit_many, pending, running_relay, wait_drained


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuServer]:
    with TansuServer() as server:
        yield server


async def test_a_hot_key_is_published_in_order_with_several_in_flight(tansu: TansuServer, tmp_path: Path) -> None:
    db, ref, topic = f"sqlite:///{tmp_path}/hot.db", TableRef(), unique("okh") + ".hot"
    migrate(db)
    ids = emit_many(db, ref, topic, [{"i": i} for i in range(2000)], key=lambda _: "hot")
    relay = build_relay(db, tansu.url, ref=ref, config=RelayConfig(poll_interval=0.05, key_depth=256))
    async with running_relay(relay):
        await wait_drained(db, ref, timeout=60)
    got = await asyncio.to_thread(read_topics, tansu.url, [topic], 2000)
    assert [m.event_id for m in got] == ids


async def test_a_poison_event_stops_its_key_there_with_several_in_flight(tansu: TansuServer, tmp_path: Path) -> None:
    db, ref, topic = f"sqlite:///{tmp_path}/poison.db", TableRef(), unique("okp") + ".hot"
    migrate(db)
    before = emit_many(db, ref, topic, [{"i": i} for i in range(100)], key=lambda _: "k")
    conn = db_connect(db)
    try:  # a row another program wrote, over Kafka's 1 MB message limit
        conn.execute(
            f"INSERT INTO {ref.qualified} (topic, key, payload) VALUES (?, ?, ?)", (topic, "k", b"x" * (2 << 20))
        )
    finally:
        conn.close()
    after = emit_many(db, ref, topic, [{"j": j} for j in range(100)], key=lambda _: "k")
    relay = build_relay(db, tansu.url, ref=ref, config=RelayConfig(poll_interval=0.05, key_depth=256))
    async with running_relay(relay):
        deadline = asyncio.get_running_loop().time() + 60
        while relay.stats.dead_lettered < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything wrongly sent after the poison would arrive by now
    got = await asyncio.to_thread(read_topics, tansu.url, [topic], len(before) + 1, 10.0)
    assert [m.event_id for m in got] == before, "nothing of the key after its dead letter"
    assert relay.stats.dead_lettered == 1
    assert pending(db, ref) == len(after), "the key's later events wait behind the dead letter"
