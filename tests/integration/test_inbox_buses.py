"""The inbox runner on every bus, conformance-style: messages another producer published without an
event id (no CloudEvents attributes) are parked as dead letters with the reason — never handled
under an empty id, never acknowledged as duplicates. Real NATS, RabbitMQ, Kafka (Tansu), Redis and
Mosquitto; SQLite as the consumer's database."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest

from outboxkit.brokers.base import Consumer
from outboxkit.brokers.kafka import KafkaConsumer
from outboxkit.brokers.mqtt import MqttConsumer, drop_session
from outboxkit.brokers.mqtt.wire import mqtt_topic
from outboxkit.brokers.nats import NatsConsumer, connect
from outboxkit.brokers.rabbitmq import RabbitMQConsumer
from outboxkit.brokers.redis import RedisConsumer
from outboxkit.inbox import InboxRunner, migrate_inbox
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import TableRef
from outboxkit.testing.kafka_server import TansuServer
from tests.conftest import NATS_URL, drop_stream, make_stream, require, unique

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = os.environ.get("OUTBOXKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
MQTT_URL = os.environ.get("OUTBOXKIT_TEST_MQTT", "mqtt://127.0.0.1:1883")
BUSES = ["nats", "rabbitmq", "kafka", "redis", "mqtt"]


class _NoMessageId(aiormq.spec.Basic.Properties):
    """aiormq gives every message a random ``message_id``; other clients (pika, Java's) send none."""

    @property  # type: ignore[override]
    def message_id(self) -> None:
        return None

    @message_id.setter
    def message_id(self, value: object) -> None:
        pass


@dataclass
class Bus:
    """One bus as a foreign producer sees it: a consumer of ours, and a raw publish of bodies with
    no attributes at all."""

    name: str
    topic: str
    make_consumer: Callable[[], Consumer]
    publish_raw: Callable[[list[bytes]], Awaitable[None]]
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuServer]:
    with TansuServer() as server:
        yield server


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    kind, group = request.param, unique("grp")
    if kind == "nats":
        require("NATS", "127.0.0.1", 4222)
        stream = await make_stream(NATS_URL)
        topic = stream.topic("orders")

        async def nats_raw(bodies: list[bytes]) -> None:
            nc = await connect(stream.url)
            try:
                for body in bodies:
                    await nc.jetstream().publish(topic, body)
            finally:
                await nc.close()

        yield Bus(kind, topic, lambda: NatsConsumer(stream.url, group=group, topics=[topic]), nats_raw)
        await drop_stream(stream)
    elif kind == "rabbitmq":
        require("RabbitMQ", "127.0.0.1", 5672)
        exchange, topic = unique("okt_x"), unique("okt") + ".orders"

        async def rabbit_raw(bodies: list[bytes]) -> None:
            conn = await aio_pika.connect(RABBIT)
            async with conn:
                ch = await conn.channel()
                await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
                raw = await ch.get_underlay_channel()
                for body in bodies:
                    await raw.basic_publish(body, exchange=exchange, routing_key=topic, properties=_NoMessageId())

        url = f"{RABBIT}?exchange={exchange}"
        yield Bus(kind, topic, lambda: RabbitMQConsumer(url, group=group, topics=[topic]), rabbit_raw)
        conn = await aio_pika.connect(RABBIT)
        async with conn:
            ch = await conn.channel()
            await ch.queue_delete(group)
            await ch.exchange_delete(exchange)
    elif kind == "kafka":
        server: TansuServer = request.getfixturevalue("tansu")
        topic = unique("okt") + ".orders"

        async def kafka_raw(bodies: list[bytes]) -> None:
            from confluent_kafka import Producer

            producer = Producer({"bootstrap.servers": server.bootstrap})
            for body in bodies:
                producer.produce(topic, body)
            assert await asyncio.to_thread(producer.flush, 20) == 0

        yield Bus(
            kind, topic, lambda: KafkaConsumer(f"{server.url}?assign=true", group=group, topics=[topic]), kafka_raw
        )
    elif kind == "redis":
        require("Redis", "127.0.0.1", 6379)
        from redis.asyncio import Redis

        topic = unique("okt") + ".orders"

        async def redis_raw(bodies: list[bytes]) -> None:
            client = Redis.from_url(REDIS_URL)
            try:
                for body in bodies:
                    await client.xadd(topic, {"data": body})
            finally:
                await client.aclose()

        yield Bus(kind, topic, lambda: RedisConsumer(REDIS_URL, group=group, topics=[topic]), redis_raw)
        client = Redis.from_url(REDIS_URL)
        try:
            await client.delete(topic)
        finally:
            await client.aclose()
    else:
        require("Mosquitto", "127.0.0.1", 1883)
        import aiomqtt

        topic = unique("okt") + ".orders"

        async def mqtt_raw(bodies: list[bytes]) -> None:
            async with aiomqtt.Client("127.0.0.1", 1883) as client:
                for body in bodies:
                    await client.publish(mqtt_topic(topic), body, qos=1)

        yield Bus(kind, topic, lambda: MqttConsumer(MQTT_URL, group=group, topics=[topic]), mqtt_raw)
        await drop_session(MQTT_URL, group)


@pytest.fixture
def sqlite_inbox(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/consumer.db"
    migrate_inbox(url, TableRef("inbox"))
    return url


async def run_until(runner: InboxRunner, first: Consumer, done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run ``runner`` (starting with the connected ``first``) until ``done()``, then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, first=first))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done():
            if task.done():
                task.result()
                raise AssertionError("the runner stopped")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met in time; stats {runner.stats}")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_messages_without_an_event_id_are_parked_with_the_reason(bus: Bus, sqlite_inbox: str) -> None:
    calls: list[str] = []

    def handler(conn: Any, event: Any) -> None:
        calls.append(event.id)

    first = bus.make_consumer()
    await first.connect()  # the subscription exists before the foreign producer publishes
    bodies = [json.dumps({"n": i}).encode() for i in range(3)]
    await bus.publish_raw(bodies)
    runner = InboxRunner(bus.make_consumer, sqlite_inbox, "billing", handler, retry_base=0.05, retry_cap=0.2)
    stats = runner.stats
    await run_until(runner, first, lambda: stats.processed + stats.duplicates + stats.dead_lettered >= 3)
    assert calls == []
    assert (stats.processed, stats.duplicates, stats.dead_lettered, stats.unidentified) == (0, 0, 3, 3)
    conn = connect_sync(sqlite_inbox)
    try:
        dead = conn.execute("SELECT event_id, payload, error, attempts FROM inbox_dead").fetchall()
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0
    finally:
        conn.close()
    assert sorted(bytes(d[1]) for d in dead) == sorted(bodies)
    assert all(d[0].startswith("unidentified:") and "no event id" in d[2] and d[3] == 0 for d in dead)


@pytest.mark.parametrize(
    "payload",
    [b'{"id": 42, "total": 99}', b'{"id": null}', b'{"id": "order-7", "total": 99}', b"[1]", b"not json"],
)
def test_an_mqtt_payload_that_is_not_a_structured_cloudevent_has_no_event_id(payload: bytes) -> None:
    """Somebody's JSON with an "id" field is a payload, not a CloudEvent: the message reaches the
    inbox unidentified (and parked), with its bytes intact."""
    from outboxkit.brokers.mqtt.wire import decode

    delivered = decode("shop/orders", payload, None)
    assert (delivered.event_id, delivered.payload, delivered.topic) == ("", payload, "shop.orders")
