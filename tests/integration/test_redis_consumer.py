"""RedisConsumer (and the publisher's Redis-specific behaviour) against the shared Redis on 6379."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from outboxkit.brokers.base import Incoming
from outboxkit.brokers.redis import RedisConsumer, RedisPublisher, unique_consumer_name
from outboxkit.errors import UnavailableError, UnroutableError
from outboxkit.testing.conformance import event
from tests.conftest import require, unique

REDIS_URL = os.environ.get("OUTBOXKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def topic() -> AsyncIterator[str]:
    require("Redis", "127.0.0.1", 6379)
    name = unique("okt") + ".events"
    yield name
    client = Redis.from_url(REDIS_URL)
    try:
        await client.delete(name)
    finally:
        await client.aclose()


@pytest.fixture
async def publisher(topic: str) -> AsyncIterator[RedisPublisher]:
    pub = RedisPublisher(REDIS_URL)
    await pub.connect()
    yield pub
    await pub.close()


async def publish(pub: RedisPublisher, topic: str, n: int, start: int = 0) -> list[str]:
    events = [event(topic, i, key=f"k{i % 3}") for i in range(start, start + n)]
    for e in events:
        await (await pub.publish(e))
    return [e.id for e in events]


async def receive_all(consumer: RedisConsumer, n: int, timeout: float = 15.0) -> list[Incoming]:
    got: list[Incoming] = []
    loop_deadline = timeout
    while len(got) < n and loop_deadline > 0:
        batch = await consumer.receive(n - len(got), 1.0)
        got += batch
        loop_deadline -= 1.0 if not batch else 0
    return got


def consumer(topic: str, group: str, **kw: object) -> RedisConsumer:
    return RedisConsumer(REDIS_URL, group=group, topics=[topic], **kw)  # type: ignore[arg-type]


async def test_receive_and_ack(topic: str, publisher: RedisPublisher) -> None:
    c = consumer(topic, unique("grp"))
    await c.connect()
    try:
        ids = await publish(publisher, topic, 10)
        got = await receive_all(c, 10)
        assert [m.message.event_id for m in got] == ids
        assert all(m.attempt == 1 for m in got)
        first = got[0].message
        assert first.topic == topic and first.key == "k0" and first.payload == b'{"i":0}'
        assert first.headers["x-test"] == "v0" and first.headers["ce-type"] == topic
        for m in got:
            await c.ack(m)
        assert await c.receive(10, 0.3) == []
        client = Redis.from_url(REDIS_URL)
        try:
            summary = await client.xpending(topic, c.group)
        finally:
            await client.aclose()
        assert summary["pending"] == 0
    finally:
        await c.close()


async def test_unacked_redelivered_after_reopen(topic: str, publisher: RedisPublisher) -> None:
    group = unique("grp")
    c = consumer(topic, group)
    await c.connect()
    ids = await publish(publisher, topic, 5)
    got = await receive_all(c, 5)
    await c.ack(got[0])
    await c.close()  # four in hand, not acked
    c = consumer(topic, group)
    await c.connect()
    try:
        again = await receive_all(c, 4)
        assert [m.message.event_id for m in again] == ids[1:]
        assert all(m.attempt == 2 for m in again)
    finally:
        await c.close()


async def test_dead_consumers_entries_are_reclaimed(topic: str, publisher: RedisPublisher) -> None:
    """A process that died (another consumer name) leaves entries pending; they come back after claim_idle."""
    group = unique("grp")
    dead = consumer(topic, group, consumer=unique_consumer_name())
    await dead.connect()
    ids = await publish(publisher, topic, 3)
    assert len(await receive_all(dead, 3)) == 3
    await dead.close()  # as if SIGKILLed: nothing acked, the name never comes back
    alive = consumer(topic, group, consumer=unique_consumer_name(), claim_idle=0.5)
    await alive.connect()
    try:
        got = await receive_all(alive, 3)
        assert sorted(m.message.event_id for m in got) == sorted(ids)
        assert all(m.attempt == 2 for m in got)
    finally:
        await alive.close()


async def test_retry_redelivers_later_with_higher_attempt(topic: str, publisher: RedisPublisher) -> None:
    c = consumer(topic, unique("grp"))
    await c.connect()
    try:
        (eid,) = await publish(publisher, topic, 1)
        (first,) = await receive_all(c, 1)
        await c.retry(first, 3.0)
        assert await c.receive(10, 0.05) == [], "retried long before its delay"
        (second,) = await receive_all(c, 1, timeout=30)
        assert second.message.event_id == eid
        assert second.attempt == 2
        await c.retry(second, 0.2)
        (third,) = await receive_all(c, 1, timeout=30)
        assert third.attempt == 3
        await c.ack(third)
        assert await c.receive(10, 0.5) == []
    finally:
        await c.close()


async def test_published_after_connect_before_receive_not_lost(topic: str, publisher: RedisPublisher) -> None:
    c = consumer(topic, unique("grp"))
    await c.connect()  # the stream does not exist yet: MKSTREAM creates it with the group
    try:
        ids = await publish(publisher, topic, 20)
        got = await receive_all(c, 20)
        assert [m.message.event_id for m in got] == ids
    finally:
        await c.close()


async def test_start_dollar_skips_history(topic: str, publisher: RedisPublisher) -> None:
    await publish(publisher, topic, 3)
    c = consumer(topic, unique("grp"), start="$")
    await c.connect()
    try:
        ids = await publish(publisher, topic, 2, start=3)
        got = await receive_all(c, 2)
        assert [m.message.event_id for m in got] == ids
        assert await c.receive(10, 0.3) == []
    finally:
        await c.close()


async def test_wrongtype_key_is_unroutable(topic: str, publisher: RedisPublisher) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.set(topic, "not a stream")
    finally:
        await client.aclose()
    with pytest.raises(UnroutableError, match="not a stream"):
        await (await publisher.publish(event(topic, 0)))
    # The connection is still usable afterwards.
    other = topic + "_ok"
    try:
        await (await publisher.publish(event(other, 1)))
    finally:
        client = Redis.from_url(REDIS_URL)
        await client.delete(other)
        await client.aclose()


async def test_warns_when_aof_is_off(topic: str, caplog: pytest.LogCaptureFixture) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        aof = (await client.config_get("appendonly")).get("appendonly")
    finally:
        await client.aclose()
    if aof != "no":
        pytest.skip("the shared Redis runs with AOF")
    pub = RedisPublisher(REDIS_URL)
    with caplog.at_level(logging.WARNING, logger="outboxkit.redis"):
        await pub.connect()
        await pub.close()
    warnings = [r for r in caplog.records if "without AOF" in r.getMessage()]
    assert len(warnings) == 1


async def test_connect_fails_fast_and_masks_password() -> None:
    from outboxkit.testing.servers import free_port

    pub = RedisPublisher(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    with pytest.raises(UnavailableError) as info:
        await pub.connect()
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    await pub.close()
