"""KafkaConsumer against a Kafka-protocol broker: receive + ack, redelivery of unacked messages after
a reopen, retry(delay), and messages published between connect() and the first receive.

There is no shared Kafka on the development machine; one private Tansu per module stands in. The
consumer assigns partitions explicitly (``?assign=true``): Tansu's first group join takes ~20 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from outboxkit.brokers.base import Incoming
from outboxkit.brokers.kafka import KafkaConsumer, KafkaPublisher
from outboxkit.brokers.registry import consumer_for
from outboxkit.testing.conformance import event
from outboxkit.testing.kafka_server import TansuServer
from tests.conftest import unique


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuServer]:
    with TansuServer() as server:
        yield server


@pytest.fixture
async def publisher(tansu: TansuServer) -> AsyncIterator[KafkaPublisher]:
    pub = KafkaPublisher(tansu.url)
    await pub.connect()
    yield pub
    await pub.close()


@pytest.fixture
def topic() -> str:
    return unique("okt") + ".orders"


def consumer(tansu: TansuServer, group: str, topic: str) -> KafkaConsumer:
    c = consumer_for(f"{tansu.url}?assign=true", group=group, topics=[topic])
    assert isinstance(c, KafkaConsumer) and c.assign
    return c


async def publish(pub: KafkaPublisher, topic: str, n: int, key: str | None = "k") -> list[str]:
    events = [event(topic, i, key=key) for i in range(n)]
    await asyncio.gather(*[await pub.publish(e) for e in events])
    return [e.id for e in events]


async def receive_all(c: KafkaConsumer, n: int, timeout: float = 20.0) -> list[Incoming]:
    out: list[Incoming] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < n and asyncio.get_running_loop().time() < deadline:
        out += await c.receive(n - len(out), 1.0)
    return out


def ids(messages: Sequence[Incoming]) -> list[str]:
    return [m.message.event_id for m in messages]


async def test_receive_and_ack(tansu: TansuServer, publisher: KafkaPublisher, topic: str) -> None:
    group = unique("grp")
    c = consumer(tansu, group, topic)
    await c.connect()
    try:
        sent = await publish(publisher, topic, 5)
        got = await receive_all(c, 5)
        assert ids(got) == sent, "one key: partition order"
        first = got[0]
        assert first.attempt == 1
        assert first.message.key == "k" and first.message.topic == topic
        assert first.message.headers.get("x-test") == "v0"
        for m in got:
            await c.ack(m)
    finally:
        await c.close()
    # Acked for good: a new consumer of the group gets nothing of it back.
    again = consumer(tansu, group, topic)
    await again.connect()
    try:
        assert await again.receive(10, 1.5) == []
    finally:
        await again.close()


async def test_unacked_redelivered_after_reopen(tansu: TansuServer, publisher: KafkaPublisher, topic: str) -> None:
    group = unique("grp")
    c = consumer(tansu, group, topic)
    await c.connect()
    sent = await publish(publisher, topic, 4)
    try:
        got = await receive_all(c, 4)
        assert ids(got) == sent
        await c.ack(got[0])
        await c.ack(got[2])  # acked, but behind an unacked one: the committed offset cannot pass it
    finally:
        await c.close()
    reopened = consumer(tansu, group, topic)
    await reopened.connect()
    try:
        again = await receive_all(reopened, 3)
        assert ids(again) == sent[1:], "at-least-once: everything from the first unacked message"
    finally:
        await reopened.close()


async def test_retry_redelivers_with_higher_attempt(tansu: TansuServer, publisher: KafkaPublisher, topic: str) -> None:
    c = consumer(tansu, unique("grp"), topic)
    await c.connect()
    try:
        sent = await publish(publisher, topic, 3)
        got = await receive_all(c, 3)
        assert ids(got) == sent
        await c.ack(got[0])
        await c.retry(got[1], 0.5)
        await c.ack(got[2])  # comes again anyway: a retry rewinds its partition
        again = await receive_all(c, 2)
        assert ids(again) == sent[1:], "redelivered in partition order"
        assert again[0].attempt == 2
        for m in again:
            await c.ack(m)
        assert await c.receive(10, 1.0) == []
    finally:
        await c.close()


async def test_published_after_connect_before_first_receive(
    tansu: TansuServer, publisher: KafkaPublisher, topic: str
) -> None:
    c = consumer(tansu, unique("grp"), topic)
    await c.connect()
    try:
        # Several keys: spread over the topic's partitions.
        sent = [i for k in range(4) for i in await publish(publisher, topic, 5, key=f"key{k}")]
        got = await receive_all(c, len(sent))
        assert sorted(ids(got)) == sorted(sent)
    finally:
        await c.close()
