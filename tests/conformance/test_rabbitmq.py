"""RabbitMQ against the broker conformance suite, plus its own hazards: unroutable messages (H8), the
CloudEvents bindings read back by the official SDK, fail-fast connect and one log line per outage.

Most checks use the shared broker (5672). The restart and oversized checks use a private RabbitMQ node
the test owns (restartable, ``max_message_size`` 1 MiB so an oversized message is cheap to send).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import aio_pika.abc
import pytest
from cloudevents.core.bindings import amqp as ce_amqp
from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
from cloudevents.core.formats.json import JSONFormat

from outboxkit.brokers.base import Delivered, Features
from outboxkit.brokers.rabbitmq import RabbitMQPublisher, delivered_from
from outboxkit.core.envelope import OutboxEvent, new_event_id
from outboxkit.errors import PermanentError, TransientError, UnavailableError, UnroutableError
from outboxkit.testing.conformance import check_broker_restart_mid_stream, check_oversized_is_permanent
from outboxkit.testing.proxy import TcpProxy
from outboxkit.testing.rabbitmq_server import RabbitMQServer
from tests.conformance.conftest import check_param, run_check
from tests.conftest import require, unique

SHARED = "amqp://guest:guest@127.0.0.1:5672/"
PRIVATE_CHECKS = {check_broker_restart_mid_stream, check_oversized_is_permanent}


class RabbitHarness:
    """Its own exchange and a durable quorum queue bound with ``<prefix>.#``; both deleted afterwards."""

    features = RabbitMQPublisher.features

    def __init__(self, base_url: str, port: int, server: RabbitMQServer | None = None) -> None:
        self.base_url = base_url
        self.port = port
        self.server = server
        self.restartable = server is not None
        self.oversized = 2 * server.max_message_size if server is not None else None
        self.exchange = unique("okt_x")
        self.queue = unique("okt_q")
        self.prefix = unique("okt")

    def topic(self, name: str = "events") -> str:
        return f"{self.prefix}.{name}"

    def url(self, host: str = "127.0.0.1", port: int | None = None) -> str:
        return f"amqp://guest:guest@{host}:{port or self.port}/?exchange={self.exchange}"

    def publisher(self, via: tuple[str, int] | None = None) -> RabbitMQPublisher:
        # 2,000 messages in flight at once to a quorum queue confirm at about 1,000/s on a busy
        # 2-core machine: the last ones wait more than 2 s for their confirm without anything wrong.
        return RabbitMQPublisher(self.url(*via) if via else self.url(), ack_timeout=10.0)

    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    async def setup(self) -> None:
        conn = await aio_pika.connect(self.base_url)
        async with conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            q = await ch.declare_queue(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
            await q.bind(ex, f"{self.prefix}.#")

    async def teardown(self) -> None:
        try:
            conn = await aio_pika.connect(self.base_url, timeout=5)
        except Exception:
            return
        async with conn:
            ch = await conn.channel()
            await ch.queue_delete(self.queue)
            await ch.exchange_delete(self.exchange)

    async def read(self, expect: int, timeout: float = 30.0) -> list[Delivered]:
        out: list[Delivered] = []
        conn = await aio_pika.connect(self.base_url)
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=expect + 10)
            queue = await ch.get_queue(self.queue)
            got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                got.put_nowait(message)

            await queue.consume(on_message)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            seen: set[str] = set()
            while len(seen) < expect and loop.time() < deadline:
                try:
                    message = await asyncio.wait_for(got.get(), min(1.0, max(0.01, deadline - loop.time())))
                except TimeoutError:
                    continue
                out.append(delivered_from(message))
                seen.add(out[-1].event_id)
            # Retried publishes leave duplicates (RabbitMQ has no dedupe): whatever else is there.
            while True:
                try:
                    out.append(delivered_from(await asyncio.wait_for(got.get(), 0.5)))
                except TimeoutError:
                    break
            # Closing without acks puts everything back: a later read sees it again.
        return out

    async def restart(self) -> None:
        assert self.server is not None
        await asyncio.to_thread(self.server.restart, 0.5)


@pytest.fixture(scope="module")
def private_node() -> Iterator[RabbitMQServer | str]:
    """One private node per test module (and xdist worker); a reason string if it cannot start."""
    try:
        server = RabbitMQServer().start()
    except Exception as exc:
        yield f"a private RabbitMQ node could not be started: {exc}"
        return
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def shared_harness() -> AsyncIterator[RabbitHarness]:
    require("RabbitMQ", "127.0.0.1", 5672)
    h = RabbitHarness(SHARED, 5672)
    await h.setup()
    try:
        yield h
    finally:
        await h.teardown()


@pytest.fixture
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[RabbitHarness]:
    """The shared broker, or the private node for the checks that restart it or need a small limit."""
    if request.node.callspec.params["check"] in PRIVATE_CHECKS:
        node = request.getfixturevalue("private_node")  # a sync fixture: fine from a running loop
        if isinstance(node, str):
            pytest.skip(f"not applicable: {node}")
        h = RabbitHarness(node.url, node.port, node)
    else:
        require("RabbitMQ", "127.0.0.1", 5672)
        h = RabbitHarness(SHARED, 5672)
    await h.setup()
    try:
        yield h
    finally:
        await h.teardown()


@check_param
async def test_rabbitmq_conformance(check: object, harness: RabbitHarness) -> None:
    assert isinstance(harness.features, Features)
    await run_check(check, harness)


# -- H8: an unroutable message is never counted as delivered -------------------------------------------


def _event(topic: str, **kw: Any) -> OutboxEvent:
    return OutboxEvent(seq=1, id=new_event_id(), topic=topic, payload=b'{"a":1}', **kw)


async def test_unroutable_fails_and_is_never_confirmed(shared_harness: RabbitHarness) -> None:
    """H8: the exchange exists but no queue is bound for this routing key. Without ``mandatory`` and
    return handling RabbitMQ would confirm the message and the relay would mark it delivered."""
    pub = shared_harness.publisher()
    await pub.connect()
    try:
        lost = _event("nobody.listens.here")
        fut = await pub.publish(lost)
        with pytest.raises(UnroutableError, match=r"nobody\.listens\.here"):
            await fut
        # The channel stays usable, and a routable message right after is confirmed.
        ok = _event(shared_harness.topic("after"))
        await (await pub.publish(ok))
    finally:
        await pub.close()
    got = await shared_harness.read(1, timeout=5)
    assert [m.event_id for m in got] == [ok.id]


# -- the official CloudEvents SDK reads what we publish ------------------------------------------------


async def _publish_and_get(h: RabbitHarness, ev: OutboxEvent) -> aio_pika.abc.AbstractIncomingMessage:
    pub = h.publisher()
    await pub.connect()
    try:
        await (await pub.publish(ev))
    finally:
        await pub.close()
    conn = await aio_pika.connect(h.base_url)
    async with conn:
        ch = await conn.channel()
        queue = await ch.get_queue(h.queue)
        for _ in range(50):
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                return message
            await asyncio.sleep(0.1)
    raise AssertionError("message not found")


def _rich_event(h: RabbitHarness) -> OutboxEvent:
    return _event(
        h.topic("ce"),
        key="cust-7",
        type="com.example.order.created",
        source="/shop",
        headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "x-tenant": "t1"},
    )


async def test_cloudevents_sdk_amqp_binding_reads_our_message(shared_harness: RabbitHarness) -> None:
    """The AMQP binding: ``cloudEvents:`` application properties (RabbitMQ maps 0-9-1 headers to AMQP
    1.0 application-properties) and ``content-type``."""
    ev = _rich_event(shared_harness)
    message = await _publish_and_get(shared_harness, ev)
    assert message.message_id == ev.id
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    amqp_message = ce_amqp.AMQPMessage(
        properties={"content-type": message.content_type},
        application_properties=dict(message.headers),
        application_data=message.body,
    )
    ce = ce_amqp.from_binary(amqp_message, JSONFormat())
    attrs = ce.get_attributes()
    assert attrs["id"] == ev.id
    assert attrs["source"] == "/shop"
    assert attrs["type"] == "com.example.order.created"
    assert attrs["subject"] == "cust-7"
    assert attrs["specversion"] == "1.0"
    assert attrs["datacontenttype"] == "application/json"
    assert attrs["traceparent"] == ev.headers["traceparent"]
    assert ce.get_data() == {"a": 1}
    assert "cloudEvents:id" in message.headers


async def test_cloudevents_sdk_rabbitmq_binding_reads_our_message(shared_harness: RabbitHarness) -> None:
    """The SDK's RabbitMQ binding (``ce-`` headers) reads the same message."""
    ev = _rich_event(shared_harness)
    message = await _publish_and_get(shared_harness, ev)
    rmq_message = ce_rabbitmq.RabbitMQMessage(
        headers={k: str(v) for k, v in message.headers.items()},
        content_type=message.content_type,
        body=message.body,
    )
    ce = ce_rabbitmq.from_binary(rmq_message, JSONFormat())
    assert ce.get_attributes()["id"] == ev.id
    assert ce.get_attributes()["subject"] == "cust-7"
    assert ce.get_data() == {"a": 1}
    decoded = delivered_from(message)
    assert (decoded.event_id, decoded.key, decoded.payload) == (ev.id, "cust-7", b'{"a":1}')


# -- connection behaviour -------------------------------------------------------------------------------


async def test_connect_fails_fast_with_masked_password() -> None:
    from outboxkit.testing.servers import free_port

    pub = RabbitMQPublisher(f"amqp://guest:s3cret@127.0.0.1:{free_port()}/")
    with pytest.raises(UnavailableError) as info:
        await asyncio.wait_for(pub.connect(), 10)
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)


async def test_one_log_line_per_outage(shared_harness: RabbitHarness, caplog: pytest.LogCaptureFixture) -> None:
    with TcpProxy("127.0.0.1", 5672) as proxy:
        pub = shared_harness.publisher(via=("127.0.0.1", proxy.port))
        await pub.connect()
        try:
            caplog.set_level(logging.INFO)
            proxy.block()  # cut and refuse reconnects: several failed attempts in one outage
            await asyncio.sleep(2.0)
            proxy.unblock()
            ev = _event(shared_harness.topic("outage"))
            for _ in range(50):
                try:
                    await (await pub.publish(ev))
                    break
                except Exception:
                    await asyncio.sleep(0.2)
        finally:
            await pub.close()
    lost = [r for r in caplog.records if "connection lost" in r.getMessage()]
    back = [r for r in caplog.records if "reconnected after" in r.getMessage()]
    noisy = [r for r in caplog.records if r.name.startswith("aio_pika") and r.levelno >= logging.WARNING]
    assert len(lost) == 1, [r.getMessage() for r in lost]
    assert len(back) == 1
    assert not noisy, [r.getMessage() for r in noisy]
    assert "guest:***@" in lost[0].getMessage()


async def test_oversized_fails_alone_its_neighbours_are_transient(private_node: RabbitMQServer | str) -> None:
    """H9: RabbitMQ closes the channel for one oversized message, failing every publish in flight on
    it; only the oversized one may be dead-lettered, the others must be retryable."""
    if isinstance(private_node, str):
        pytest.skip(f"not applicable: {private_node}")
    h = RabbitHarness(private_node.url, private_node.port, private_node)
    await h.setup()
    pub = h.publisher()
    await pub.connect()
    try:
        big = _event(h.topic("big"))
        big = OutboxEvent(seq=2, id=big.id, topic=big.topic, payload=b"x" * (2 * private_node.max_message_size))
        futures = [await pub.publish(e) for e in (_event(h.topic("a")), big, _event(h.topic("b")))]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[1], PermanentError), results[1]
        assert "max size" in str(results[1])
        assert not any(isinstance(r, PermanentError) for r in (results[0], results[2])), results
        assert all(r is None or isinstance(r, TransientError) for r in (results[0], results[2])), results
        await (await pub.publish(_event(h.topic("after"))))  # the reopened channel works
    finally:
        await pub.close()
        await h.teardown()
