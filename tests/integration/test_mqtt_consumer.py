"""MqttConsumer against the shared Mosquitto (127.0.0.1:1883): persistent session, manual PUBACK,
redelivery of what was not acknowledged, local retry. Each test has its own topic and session."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest

from outboxkit.brokers.base import Incoming
from outboxkit.brokers.mqtt import MqttConsumer, MqttPublisher, drop_session
from outboxkit.errors import PermanentError, UnavailableError, UnroutableError
from outboxkit.testing.conformance import event
from outboxkit.testing.servers import free_port
from tests.conftest import require, unique

MQTT_URL = os.environ.get("OUTBOXKIT_TEST_MQTT", "mqtt://127.0.0.1:1883")


@dataclass
class Setup:
    url: str
    topic: str
    group: str

    def consumer(self) -> MqttConsumer:
        return MqttConsumer(self.url, group=self.group, topics=[self.topic])

    async def publish(self, n: int, start: int = 0) -> list[str]:
        pub = MqttPublisher(self.url)
        await pub.connect()
        try:
            events = [event(self.topic, start + i, key=f"k{i % 2}") for i in range(n)]
            for e in events:
                await (await pub.publish(e))
        finally:
            await pub.close()
        return [e.id for e in events]


async def collect(consumer: MqttConsumer, n: int, timeout: float = 10.0) -> list[Incoming]:
    out: list[Incoming] = []
    for _ in range(int(timeout / 0.5)):
        out += await consumer.receive(n - len(out), 0.5)
        if len(out) >= n:
            break
    return out


def ids(items: Sequence[Incoming]) -> list[str]:
    return [i.message.event_id for i in items]


@pytest.fixture(params=[5, 311], ids=["v5", "v311"])
async def mqtt(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    require("Mosquitto", "127.0.0.1", 1883)
    url = f"{MQTT_URL}?version={request.param}"
    setup = Setup(url, f"{unique('okt')}.orders.created", unique("grp"))
    yield setup
    await drop_session(url, setup.group)


async def test_receive_ack_and_decode(mqtt: Setup) -> None:
    consumer = mqtt.consumer()
    await consumer.connect()
    try:
        sent = await mqtt.publish(3)
        got = await collect(consumer, 3)
        assert ids(got) == sent
        first = got[0].message
        assert first.topic == mqtt.topic  # orders/created on the wire, orders.created back
        assert first.key == "k0"
        assert json.loads(first.payload) == {"i": 0}
        assert first.headers["x-test"] == "v0"
        assert first.headers["specversion"] == "1.0"
        assert all(i.attempt == 1 for i in got)
        for incoming in got:
            await consumer.ack(incoming)
    finally:
        await consumer.close()
    again = mqtt.consumer()
    await again.connect()
    try:
        assert await again.receive(10, 1.5) == []
    finally:
        await again.close()


async def test_unacked_is_redelivered_after_reopen(mqtt: Setup) -> None:
    consumer = mqtt.consumer()
    await consumer.connect()
    sent = await mqtt.publish(2)
    try:
        got = await collect(consumer, 2)
        assert ids(got) == sent
        await consumer.ack(got[0])
    finally:
        await consumer.close()  # got[1] is not acknowledged: the session keeps it
    reopened = mqtt.consumer()
    await reopened.connect()
    try:
        (back,) = await collect(reopened, 1)
        assert back.message.event_id == sent[1]
        assert back.attempt == 2  # resent with DUP set
        await reopened.ack(back)
    finally:
        await reopened.close()


async def test_retry_redelivers_with_higher_attempt(mqtt: Setup) -> None:
    consumer = mqtt.consumer()
    await consumer.connect()
    try:
        (sent,) = await mqtt.publish(1)
        (first,) = await collect(consumer, 1)
        await consumer.retry(first, 0.3)
        assert await consumer.receive(1, 0.05) == []  # not before the delay
        (second,) = await collect(consumer, 1)
        assert second.message.event_id == sent
        assert second.attempt == first.attempt + 1
        await consumer.ack(second)
    finally:
        await consumer.close()


async def test_published_after_connect_before_receive_is_kept(mqtt: Setup) -> None:
    consumer = mqtt.consumer()
    await consumer.connect()
    await consumer.close()  # the session and its subscription outlive the connection
    sent = await mqtt.publish(5)
    consumer = mqtt.consumer()
    await consumer.connect()
    try:
        got = await collect(consumer, 5)
        assert ids(got) == sent
        for incoming in got:
            await consumer.ack(incoming)
    finally:
        await consumer.close()


async def test_no_subscriber_is_unroutable_on_v5() -> None:
    require("Mosquitto", "127.0.0.1", 1883)
    pub = MqttPublisher(MQTT_URL)
    await pub.connect()
    try:
        with pytest.raises(UnroutableError):
            await (await pub.publish(event(unique("nobody"), 0)))
    finally:
        await pub.close()


async def test_client_side_size_limit_is_permanent() -> None:
    require("Mosquitto", "127.0.0.1", 1883)
    pub = MqttPublisher(f"{MQTT_URL}?max_message_size=1000")
    await pub.connect()
    try:
        with pytest.raises(PermanentError, match="maximum packet size"):
            await (await pub.publish(event(unique("big"), 0, payload=b"x" * 2000)))
    finally:
        await pub.close()


async def test_connect_fails_fast_when_unreachable() -> None:
    pub = MqttPublisher(f"mqtt://user:secret@127.0.0.1:{free_port()}")
    with pytest.raises(UnavailableError) as info:
        await pub.connect()
    assert "secret" not in str(info.value)
    assert "\n" not in str(info.value)
