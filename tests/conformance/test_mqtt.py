"""MQTT against the broker conformance suite, on a private Mosquitto the test owns (restartable,
with a maximum packet size so that the oversized check has a limit to hit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxkit.brokers.base import Delivered, Features
from outboxkit.brokers.mqtt import MqttConsumer, MqttPublisher, drop_session
from outboxkit.errors import ConfigurationError
from outboxkit.testing.mqtt_server import MosquittoServer, mosquitto_binary
from tests.conformance.conftest import check_param, run_check
from tests.conftest import CI, unique

MAX_PACKET = 256 * 1024


class MqttHarness:
    """Publishes to ``<prefix>.<name>`` and reads back through a persistent session subscribed to
    ``<prefix>/#`` before anything is published (MQTT keeps messages only for subscribers)."""

    oversized = 2 * MAX_PACKET
    restartable = True
    features: Features = MqttPublisher.features

    def __init__(self, server: MosquittoServer, version: int = 5) -> None:
        self.server = server
        self.version = version
        self.prefix = unique("conf")
        self.group = unique("reader")

    def url(self, host: str = "127.0.0.1", port: int | None = None) -> str:
        return f"mqtt://{host}:{port or self.server.port}?version={self.version}"

    def topic(self, name: str = "events") -> str:
        return f"{self.prefix}.{name}"

    def publisher(self, via: tuple[str, int] | None = None) -> MqttPublisher:
        url = self.url(*via) if via else self.url()
        # As for RabbitMQ: 2,000 QoS 1 messages in flight confirm at about 1,000/s on a busy machine.
        return MqttPublisher(url, ack_timeout=10.0)

    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.server.port

    def reader(self) -> MqttConsumer:
        return MqttConsumer(self.url(), group=self.group, topics=[f"{self.prefix}.>"])

    async def setup(self) -> None:
        reader = self.reader()
        await reader.connect()
        await reader.close()

    async def read(self, expect: int, timeout: float = 30.0) -> list[Delivered]:
        reader = self.reader()
        await reader.connect()
        out: list[Delivered] = []
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while len(out) < expect and (left := deadline - asyncio.get_running_loop().time()) > 0:
                for incoming in await reader.receive(500, min(left, 1.0)):
                    out.append(incoming.message)
                    await reader.ack(incoming)
        finally:
            await reader.close()
        return out

    async def restart(self) -> None:
        await asyncio.to_thread(self.server.restart, 0.5)

    async def teardown(self) -> None:
        await drop_session(self.url(), self.group)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[MqttHarness]:
    try:
        mosquitto_binary()
    except ConfigurationError as exc:
        if CI:
            pytest.fail(f"{exc} (CI=true: services are required)")
        pytest.skip(str(exc))
    with MosquittoServer(str(tmp_path / "mosquitto"), max_packet_size=MAX_PACKET) as server:
        h = MqttHarness(server)
        await h.setup()
        yield h
        await h.teardown()


@check_param
async def test_mqtt_conformance(check: object, harness: MqttHarness) -> None:
    assert isinstance(harness.features, Features)
    await run_check(check, harness)
