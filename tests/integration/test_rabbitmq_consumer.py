"""RabbitMQConsumer against the shared RabbitMQ: acks, redelivery after a crash, retry with a higher
attempt, and messages published between connect() and the first receive() are kept."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from outboxkit.brokers.base import Incoming
from outboxkit.brokers.rabbitmq import RabbitMQConsumer, RabbitMQPublisher
from outboxkit.core.envelope import OutboxEvent, new_event_id
from outboxkit.errors import UnroutableError
from outboxkit.inbox import InboxRunner, migrate_inbox
from outboxkit.stores.base import TableRef
from tests.conftest import require, unique

BASE = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Setup:
    url: str
    exchange: str
    group: str
    prefix: str

    def consumer(self) -> RabbitMQConsumer:
        return RabbitMQConsumer(self.url, group=self.group, topics=[f"{self.prefix}.#"], prefetch=50)


@pytest.fixture
async def rmq() -> AsyncIterator[Setup]:
    require("RabbitMQ", "127.0.0.1", 5672)
    exchange, group, prefix = unique("okt_x"), unique("okt_g"), unique("okt")
    yield Setup(f"{BASE}?exchange={exchange}", exchange, group, prefix)
    conn = await aio_pika.connect(BASE)
    async with conn:
        ch = await conn.channel()
        await ch.queue_delete(group)
        await ch.exchange_delete(exchange)


async def publish(url: str, topic: str, n: int, key: str = "k") -> list[OutboxEvent]:
    events = [
        OutboxEvent(seq=i + 1, id=new_event_id(), topic=topic, payload=f'{{"i":{i}}}'.encode(), key=key)
        for i in range(n)
    ]
    pub = RabbitMQPublisher(url)
    await pub.connect()
    try:
        await asyncio.gather(*[await pub.publish(e) for e in events])
    finally:
        await pub.close()
    return events


async def receive_all(consumer: RabbitMQConsumer, n: int, timeout: float = 20.0) -> list[Incoming]:
    got: list[Incoming] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < n and asyncio.get_running_loop().time() < deadline:
        got.extend(await consumer.receive(n - len(got), 1.0))
    return got


async def test_receive_and_ack(rmq: Setup) -> None:
    consumer = rmq.consumer()
    await consumer.connect()
    try:
        events = await publish(rmq.url, f"{rmq.prefix}.orders.created", 5)
        got = await receive_all(consumer, 5)
        assert [m.message.event_id for m in got] == [e.id for e in events]
        first = got[0]
        assert first.attempt == 1
        assert first.message.topic == f"{rmq.prefix}.orders.created"
        assert first.message.key == "k"
        assert first.message.payload == b'{"i":0}'
        for m in got:
            await consumer.ack(m)
    finally:
        await consumer.close()
    # Acked for good: a new consumer of the group gets nothing.
    again = rmq.consumer()
    await again.connect()
    try:
        assert await again.receive(10, 1.5) == []
    finally:
        await again.close()


async def test_unacked_message_is_redelivered_after_reopen(rmq: Setup) -> None:
    consumer = rmq.consumer()
    await consumer.connect()
    events = await publish(rmq.url, f"{rmq.prefix}.x", 3)
    got = await receive_all(consumer, 3)
    await consumer.ack(got[0])
    await consumer.close()  # a crash as far as the broker is concerned: 2 unacked messages

    reopened = rmq.consumer()
    await reopened.connect()
    try:
        back = await receive_all(reopened, 2)
        assert sorted(m.message.event_id for m in back) == sorted(e.id for e in events[1:])
        assert all(m.attempt >= 2 for m in back), [m.attempt for m in back]
        for m in back:
            await reopened.ack(m)
    finally:
        await reopened.close()


async def test_retry_redelivers_with_a_higher_attempt(rmq: Setup) -> None:
    consumer = rmq.consumer()
    await consumer.connect()
    try:
        (event,) = await publish(rmq.url, f"{rmq.prefix}.retry", 1)
        (first,) = await receive_all(consumer, 1)
        assert first.attempt == 1
        await consumer.retry(first, 0.5)
        (second,) = await receive_all(consumer, 1)
        assert second.message.event_id == event.id
        assert second.attempt == 2
        await consumer.retry(second, 0.1)
        (third,) = await receive_all(consumer, 1)
        assert third.attempt == 3
        await consumer.ack(third)
        assert await consumer.receive(1, 1.0) == []
    finally:
        await consumer.close()


async def test_messages_published_before_first_receive_are_kept(rmq: Setup) -> None:
    consumer = rmq.consumer()
    await consumer.connect()  # declares and binds the queue: from here on it retains messages
    try:
        events = await publish(rmq.url, f"{rmq.prefix}.early", 20)
        await asyncio.sleep(0.5)
        got = await receive_all(consumer, 20)
        assert [m.message.event_id for m in got] == [e.id for e in events]
        for m in got:
            await consumer.ack(m)
    finally:
        await consumer.close()


async def test_topics_filter_by_binding_key(rmq: Setup) -> None:
    consumer = RabbitMQConsumer(rmq.url, group=rmq.group, topics=[f"{rmq.prefix}.wanted"])
    await consumer.connect()
    try:
        await publish(rmq.url, f"{rmq.prefix}.wanted", 2)
        # Publishing another topic with no queue bound fails (H8) and never reaches this group.
        with pytest.raises(UnroutableError, match="no queue is bound"):
            await publish(rmq.url, f"{rmq.prefix}.other", 1)
        got = await receive_all(consumer, 2)
        assert {m.message.topic for m in got} == {f"{rmq.prefix}.wanted"}
        assert await consumer.receive(5, 1.0) == []
    finally:
        await consumer.close()


async def test_held_and_retried_messages_never_spend_the_quorum_delivery_limit(rmq: Setup, tmp_path: Path) -> None:
    """A quorum queue with ``x-delivery-limit`` 2 drops a message requeued more often. Message A
    fails four times; B and C of the same key wait behind it (held, a dozen times or more). Every
    one is processed, in order: neither A's retries nor the holds went back to the broker."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl to set a delivery-limit policy on the local RabbitMQ")
    # A policy, as RabbitMQ recommends for delivery limits; the consumer's own declaration stays as it is.
    policy = f"{rmq.group}_limit"
    _rabbitmqctl("set_policy", "--apply-to", "queues", policy, f"^{rmq.group}$", '{"delivery-limit": 2}')
    try:
        await _held_messages_are_all_processed(rmq, tmp_path)
    finally:
        _rabbitmqctl("clear_policy", policy)


def _rabbitmqctl(*args: str) -> None:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


async def _held_messages_are_all_processed(rmq: Setup, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/consumer.db"
    migrate_inbox(url, TableRef("inbox"))
    calls: list[tuple[str, int]] = []
    done: list[int] = []

    def handler(_conn: Any, event: Any) -> None:
        order = event.json()["i"]
        calls.append((event.key, order))
        if order == 0 and calls.count((event.key, 0)) <= 4:
            raise RuntimeError("A is not ready yet")
        done.append(order)

    first = rmq.consumer()
    await first.connect()
    await publish(rmq.url, f"{rmq.prefix}.orders", 3)  # i = 0 (A), 1 (B), 2 (C), all of key "k"
    # All three in the consumer's hands before the runner starts: one batch, A first, so B and C
    # are held behind A's failures whatever the machine's load.
    deadline = asyncio.get_running_loop().time() + 30
    while first._inbox.qsize() < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    runner = InboxRunner(rmq.consumer, url, "billing", handler, max_attempts=10, retry_base=0.05, retry_cap=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, first=first))
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while runner.stats.processed < 3 and asyncio.get_running_loop().time() < deadline and not task.done():
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert done == [0, 1, 2], (done, runner.stats)
    assert runner.stats.failed == 4 and runner.stats.held >= 2 and runner.stats.dead_lettered == 0
