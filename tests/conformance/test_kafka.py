"""Kafka against the broker conformance suite, on a private Tansu broker (memory storage).

One Tansu per module keeps the suite fast; every test uses topics of its own. The connection cut
goes through a ``tansu proxy`` that advertises the TcpProxy's port, so that every request, not
only the bootstrap one, crosses the proxy the check cuts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import confluent_kafka
import pytest
from cloudevents.core.bindings import kafka as ce_kafka

from outboxkit.brokers.base import Delivered, Features
from outboxkit.brokers.kafka import KafkaPublisher, parse_url, read_topics, translate
from outboxkit.core.envelope import OutboxEvent, new_event_id
from outboxkit.errors import PermanentError, TransientError, UnavailableError, UnroutableError
from outboxkit.testing.conformance import NotSupported, check_broker_restart_mid_stream
from outboxkit.testing.kafka_server import TansuProxy, TansuServer
from outboxkit.testing.servers import free_port
from tests.conformance.conftest import check_param, run_check
from tests.conftest import unique


class KafkaHarness:
    # Over librdkafka's default message.max.bytes (1,000,000): refused before it is sent, with
    # the same MSG_SIZE_TOO_LARGE a Kafka broker answers for a message over its limit.
    oversized = 2 * 1024 * 1024
    restartable = True  # we own the process, but see restart(): memory storage

    def __init__(self, server: TansuServer) -> None:
        self.server = server
        self.features = KafkaPublisher.features
        self.prefix = unique("okt")
        self.topics: set[str] = set()
        self._proxy_port: int | None = None
        self._proxy: TansuProxy | None = None

    def topic(self, name: str = "events") -> str:
        topic = f"{self.prefix}.{name}"
        self.topics.add(topic)
        return topic

    def publisher(self, via: tuple[str, int] | None = None) -> KafkaPublisher:
        if via is None:
            return KafkaPublisher(self.server.url)
        # The check's TcpProxy forwards `via` to address(); a tansu proxy there advertises `via`,
        # so the client's produce connection goes through the TcpProxy too.
        assert self._proxy_port is not None, "address() first"
        self._proxy = TansuProxy(self.server, advertised_port=via[1], port=self._proxy_port).start()
        return KafkaPublisher(f"kafka://{via[0]}:{via[1]}")

    def address(self) -> tuple[str, int]:
        self._proxy_port = free_port()
        return "127.0.0.1", self._proxy_port

    async def read(self, expect: int, timeout: float = 30.0) -> list[Delivered]:
        return await asyncio.to_thread(read_topics, self.server.url, sorted(self.topics), expect, timeout)

    async def restart(self) -> None:
        raise NotSupported("Tansu keeps data in memory")

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
        if self.topics:
            admin = confluent_kafka.admin.AdminClient(parse_url(self.server.url).config)
            for future in admin.delete_topics(sorted(self.topics), operation_timeout=5).values():
                try:
                    future.result(10)
                except Exception as exc:
                    logging.getLogger(__name__).debug("topic cleanup: %s", exc)


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuServer]:
    with TansuServer() as server:
        yield server


@pytest.fixture
def harness(tansu: TansuServer) -> Iterator[KafkaHarness]:
    h = KafkaHarness(tansu)
    yield h
    h.close()


@check_param
async def test_kafka_conformance(check: Any, harness: KafkaHarness) -> None:
    assert isinstance(harness.features, Features)
    if check is check_broker_restart_mid_stream:
        # A restart of Tansu here loses every message (memory is its only storage engine in this
        # build: sqlite and postgres are not compiled in), so "nothing confirmed is lost" cannot hold.
        async def not_durable(_: object) -> None:
            raise NotSupported("Tansu keeps data in memory: a restart loses every topic")

        check = not_durable
    await run_check(check, harness)


# -- Kafka specifics ---------------------------------------------------------------------------------


def _raw(url: str, topic: str) -> confluent_kafka.Message:
    consumer = confluent_kafka.Consumer({**parse_url(url).config, "group.id": unique("raw")})
    try:
        info = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in info.partitions])
        for _ in range(40):
            for msg in consumer.consume(10, 0.5):
                if msg.error() is None:
                    return msg
        raise AssertionError(f"nothing on {topic}")
    finally:
        consumer.close()


async def test_cloudevents_sdk_reads_what_we_publish(harness: KafkaHarness) -> None:
    pub = harness.publisher()
    await pub.connect()
    event = OutboxEvent(
        seq=1,
        id=new_event_id(),
        topic=harness.topic("ce"),
        payload=b'{"order":42}',
        key="cust-7",
        type="com.example.order.created",
        source="/orders",
        headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    )
    try:
        await (await pub.publish(event))
    finally:
        await pub.close()
    msg = await asyncio.to_thread(_raw, harness.server.url, event.topic)
    assert msg.key() == b"cust-7", "the event key is the Kafka message key"
    headers = msg.headers()
    assert isinstance(headers, list)
    names = [name for name, _ in headers]
    for name in ("ce_id", "ce_source", "ce_type", "ce_time", "ce_specversion", "ce_subject", "content-type"):
        assert name in names
    ce = ce_kafka.from_binary_event(
        ce_kafka.KafkaMessage(
            headers={name: value for name, value in headers if isinstance(value, bytes)},
            key=msg.key(),
            value=msg.value() or b"",
        )
    )
    assert ce.get_id() == event.id
    assert ce.get_source() == "/orders"
    assert ce.get_type() == "com.example.order.created"
    assert ce.get_subject() == "cust-7"
    assert ce.get_specversion() == "1.0"
    assert ce.get_datacontenttype() == "application/json"
    assert ce.get_time() is not None
    assert ce.get_data() == {"order": 42}
    assert ce.get_extension("traceparent") == event.headers["traceparent"]
    assert ce.get_extension("partitionkey") == "cust-7"


async def test_connect_fails_fast_with_redacted_url() -> None:
    pub = KafkaPublisher(f"kafka://user:s3cret@127.0.0.1:{free_port()}")
    with pytest.raises(UnavailableError) as info:
        await pub.connect()
    assert "s3cret" not in str(info.value)
    assert "\n" not in str(info.value)


def test_url_options() -> None:
    parsed = parse_url("kafka://u:p%40ss@h1:9093,h2?linger.ms=20&assign=true&compression.type=lz4")
    assert parsed.config["bootstrap.servers"] == "h1:9093,h2:9092"
    assert parsed.config["sasl.password"] == "p@ss"
    assert parsed.config["linger.ms"] == "20"
    assert parsed.config["compression.type"] == "lz4"
    assert parsed.options == {"assign": "true"}
    pub = KafkaPublisher("kafka://h1:9092?enable.idempotence=false&acks=1&linger.ms=1")
    assert pub.config["enable.idempotence"] is True and pub.config["acks"] == "all", "not overridable"
    assert pub.config["linger.ms"] == "1"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE, PermanentError),
        (confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART, UnroutableError),
        (confluent_kafka.KafkaError._UNKNOWN_TOPIC, UnroutableError),
        (confluent_kafka.KafkaError._MSG_TIMED_OUT, TransientError),
        (confluent_kafka.KafkaError._TRANSPORT, UnavailableError),
        (confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS, TransientError),
    ],
)
def test_error_translation(code: int, kind: type[Exception]) -> None:
    err = translate(confluent_kafka.KafkaError(code), "t")
    assert type(err) is kind
    assert str(err)


@pytest.fixture
async def owned_tansu() -> AsyncIterator[TansuServer]:
    with TansuServer() as server:
        yield server


async def test_publisher_recovers_after_broker_restart(owned_tansu: TansuServer) -> None:
    """G8 without durability: after Tansu comes back (empty), the same publisher delivers again,
    even though the new broker does not know the idempotent producer's id."""
    pub = KafkaPublisher(owned_tansu.url, ack_timeout=3.0)
    await pub.connect()
    topic = unique("okt") + ".restart"
    try:
        await (await pub.publish(OutboxEvent(seq=1, id=new_event_id(), topic=topic, payload=b"1", key="k")))
        await asyncio.to_thread(owned_tansu.restart, 0.5)
        delivered = None
        for attempt in range(60):
            ev = OutboxEvent(seq=2 + attempt, id=new_event_id(), topic=topic, payload=b"2", key="k")
            try:
                await (await pub.publish(ev))
            except TransientError:
                await asyncio.sleep(0.5)
                continue
            delivered = ev
            break
        assert delivered is not None, "the publisher never delivered after the restart"
    finally:
        await pub.close()
    got = await asyncio.to_thread(read_topics, owned_tansu.url, [topic], 1, 20)
    assert delivered.id in {m.event_id for m in got}
