"""Broker faults that must come out classed (H12), against real brokers.

* A client closed for good is ``UnavailableError`` naming why, and a new publisher works: NATS after
  an ``-ERR`` reply (injected through the TCP proxy, or a real 'Authorization Violation' after a
  config reload), RabbitMQ after a channel close aio-pika cannot undo, MQTT after a broker disconnect.
* Broker refusals reach the publish with their class: JetStream error codes (known and unknown),
  RabbitMQ's exchange deleted under the publisher, Redis OOM / READONLY / NOPERM / unknown -ERR.
* Kafka's fatal error replaces the producer; what it held is not counted.
* A consumer call that meets an exception no table knows raises an outboxkit error, never the raw one;
  a RabbitMQ consumer whose channel cannot reopen says so (UnavailableError) instead of going quiet.

Servers that a test breaks are its own (private nats-server, redis-server, Mosquitto, RabbitMQ
node); the shared services are only used with unique names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from confluent_kafka import KafkaError
from redis.asyncio import Redis

from outboxkit.brokers.base import Incoming
from outboxkit.brokers.kafka import KafkaConsumer, KafkaPublisher
from outboxkit.brokers.mqtt import MqttConsumer, MqttPublisher
from outboxkit.brokers.nats import NatsConsumer, NatsPublisher, connect, ensure_stream
from outboxkit.brokers.rabbitmq import RabbitMQConsumer, RabbitMQPublisher
from outboxkit.brokers.redis import RedisConsumer, RedisPublisher
from outboxkit.core.envelope import OutboxEvent, new_event_id
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    OutboxkitError,
    PermanentError,
    TransientError,
    UnavailableError,
    UnroutableError,
)
from outboxkit.testing import NatsServer, TcpProxy
from outboxkit.testing.servers import nats_server_binary
from tests.conftest import CI, require, unique

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"
REDIS = "redis://127.0.0.1:6379/0"
MQTT = "mqtt://127.0.0.1:1883"


def ev(topic: str, payload: bytes = b'{"a":1}', **headers: str) -> OutboxEvent:
    return OutboxEvent(seq=1, id=new_event_id(), topic=topic, payload=payload, headers=headers)


async def outcome(publisher: Any, event: OutboxEvent) -> BaseException | None:
    """What the publish's future ends with (None: confirmed)."""
    try:
        await (await publisher.publish(event))
    except BaseException as exc:
        return exc
    return None


def need(binary: Any) -> None:
    """Skip (fail under CI) when a broker binary for a private server is missing."""
    try:
        binary()
    except ConfigurationError as exc:
        if CI:
            pytest.fail(f"{exc} (CI=true: services are required)")
        pytest.skip(str(exc))


class Unheard(Exception):
    """An exception no adapter table knows."""


# -- NATS ----------------------------------------------------------------------------------------------


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    with NatsServer() as server:
        nc = await connect(server.url)
        try:
            await ensure_stream(nc, "FAULTS", ["f.>"])
        finally:
            await nc.close()
        yield server


async def test_nats_client_closed_by_err_reply_is_unavailable_and_a_new_publisher_works(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-py closes its client for good after most -ERR replies and never reconnects it: every
    publish must then be UnavailableError (the relay rebuilds), not a TransientError forever."""
    silent = await connect(nats_server.url)  # takes "silent.>" and never answers: a PubAck that never comes
    await silent.subscribe("silent.>")
    with TcpProxy("127.0.0.1", nats_server.port) as proxy:
        url = f"nats://127.0.0.1:{proxy.port}"
        pub = NatsPublisher(url, ack_timeout=10.0)
        await pub.connect()
        try:
            assert await outcome(pub, ev("f.a")) is None
            in_flight = await pub.publish(ev("silent.a"))
            caplog.set_level(logging.WARNING, "outboxkit.nats")
            assert proxy.inject(b"-ERR 'Unknown Protocol Operation'\r\n") == 1
            # Failed as soon as the client closes, not after the 10 s ack timeout.
            with pytest.raises(UnavailableError, match="unknown protocol operation"):
                await asyncio.wait_for(in_flight, 3.0)
            for _ in range(3):
                error = await outcome(pub, ev("f.a"))
                assert type(error) is UnavailableError, error
                assert "unknown protocol operation" in str(error)
        finally:
            await pub.close()
            await silent.close()
        dead = [r for r in caplog.records if "closed for good" in r.getMessage()]
        assert len(dead) == 1 and dead[0].levelno == logging.ERROR
        assert "unknown protocol operation" in dead[0].getMessage()
        fresh = NatsPublisher(url, ack_timeout=5.0)
        await fresh.connect()
        try:
            assert await outcome(fresh, ev("f.b")) is None
        finally:
            await fresh.close()


class AuthNatsServer(NatsServer):
    """A private nats-server with a user, JetStream and a publish ACL, from a config file that a test
    can change and reload (``nats-server --signal reload``)."""

    password = "one"

    @property
    def conf(self) -> str:
        return os.path.join(self.data_dir, "nats.conf")

    @property
    def url(self) -> str:
        return f"nats://app:one@127.0.0.1:{self.port}"

    def prepare(self) -> None:
        Path(self.conf).write_text(
            f"host: 127.0.0.1\nport: {self.port}\n"
            f'jetstream {{ store_dir: "{self.data_dir}" }}\n'
            f'authorization {{ users = [ {{user: app, password: "{self.password}", '
            'permissions: {publish: {deny: ["secret.>"]}}} ] }\n'
        )

    def command(self) -> list[str]:
        return [nats_server_binary(), "-c", self.conf]

    def reload(self, password: str) -> None:
        self.password = password
        self.prepare()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)  # what `nats-server --signal reload` sends


@pytest.fixture
async def auth_nats() -> AsyncIterator[AuthNatsServer]:
    with AuthNatsServer() as server:
        nc = await connect(server.url)
        try:
            await ensure_stream(nc, "AUTH", ["ok.>", "secret.>"])
        finally:
            await nc.close()
        yield server


async def test_nats_authorization_violation_after_reload_closes_the_client_for_good(
    auth_nats: AuthNatsServer,
) -> None:
    pub = NatsPublisher(auth_nats.url, ack_timeout=3.0)
    await pub.connect()
    try:
        assert await outcome(pub, ev("ok.a")) is None
        auth_nats.reload(password="two")  # the server drops the user: -ERR 'Authorization Violation'
        for _ in range(50):
            error = await outcome(pub, ev("ok.a"))
            if error is not None:
                break
            await asyncio.sleep(0.1)
        assert type(error) is UnavailableError, error
        assert "authorization" in str(error)
        assert type(await outcome(pub, ev("ok.a"))) is UnavailableError
    finally:
        await pub.close()


async def test_nats_publish_permission_violation_is_unroutable(auth_nats: AuthNatsServer) -> None:
    """The server answers a denied publish with -ERR 'Permissions Violation ...' and drops the message
    (the connection stays up): without a class it would wait for the PubAck timeout, counted."""
    pub = NatsPublisher(auth_nats.url, ack_timeout=10.0)
    await pub.connect()
    try:
        error = await asyncio.wait_for(outcome(pub, ev("secret.plans")), 5.0)
        assert type(error) is UnroutableError, error
        assert "secret.plans" in str(error)
        assert await outcome(pub, ev("ok.after")) is None
    finally:
        await pub.close()


async def test_nats_jetstream_refusals_reach_the_publish(nats_server: NatsServer) -> None:
    """JetStream error replies to a publish (nats-py's publish_async never set them on its future:
    they all looked like timeouts), each with its class."""
    nc = await connect(nats_server.url)
    try:
        await ensure_stream(nc, "SMALL", ["small.>"], max_msg_size=2048, max_msgs=2, discard="new")
    finally:
        await nc.close()
    pub = NatsPublisher(nats_server.url, ack_timeout=10.0)
    await pub.connect()
    try:

        async def quick(event: OutboxEvent) -> BaseException | None:
            return await asyncio.wait_for(outcome(pub, event), 5.0)  # well before the ack timeout

        too_big = await quick(ev("small.a", b"x" * 4096))
        assert type(too_big) is PermanentError and "10054" in str(too_big), too_big
        # A row written by another program with a JetStream header that can never hold (H11).
        wrong_seq = await quick(ev("small.a", **{"Nats-Expected-Last-Sequence": "99"}))
        assert type(wrong_seq) is PermanentError and "10071" in str(wrong_seq), wrong_seq
        assert await quick(ev("small.a")) is None
        assert await quick(ev("small.a")) is None
        full = await quick(ev("small.a"))  # max_msgs=2 with discard=new: the stream is full
        assert type(full) is TransientError and "10077" in str(full), full
        nobody = await quick(ev("nostream.a"))
        assert type(nobody) is UnroutableError, nobody
    finally:
        await pub.close()


async def test_nats_unknown_jetstream_error_code_is_counted_not_permanent(nats_server: NatsServer) -> None:
    """A newer server's error code: a responder on the subject answers the publish the way JetStream
    does, with a code no table knows. It must be a TransientError carrying the reply, not a
    PermanentError, not a raw APIError and not a timeout."""
    nc = await connect(nats_server.url)

    async def future_server(msg: Any) -> None:
        await msg.respond(b'{"error":{"code":400,"err_code":19999,"description":"from the future"}}')

    await nc.subscribe("future.>", cb=future_server)
    pub = NatsPublisher(nats_server.url, ack_timeout=10.0)
    await pub.connect()
    try:
        error = await asyncio.wait_for(outcome(pub, ev("future.a")), 5.0)
        assert type(error) is TransientError, error
        assert "from the future" in str(error) and "19999" in str(error)
    finally:
        await pub.close()
        await nc.close()


async def test_nats_consumer_of_a_closed_client_is_unavailable(nats_server: NatsServer) -> None:
    with TcpProxy("127.0.0.1", nats_server.port) as proxy:
        consumer = NatsConsumer(f"nats://127.0.0.1:{proxy.port}", group=unique("g"), topics=["f.>"])
        await consumer.connect()
        try:
            assert await consumer.receive(10, 0.2) == []
            proxy.inject(b"-ERR 'Unknown Protocol Operation'\r\n")
            await asyncio.sleep(0.3)
            with pytest.raises(UnavailableError, match="unknown protocol operation"):
                await consumer.receive(10, 0.2)
        finally:
            await consumer.close()


# -- RabbitMQ ------------------------------------------------------------------------------------------


@pytest.fixture
async def rabbit_setup() -> AsyncIterator[tuple[str, str, str]]:
    """(exchange, queue, prefix) on the shared broker, deleted afterwards."""
    require("RabbitMQ", "127.0.0.1", 5672)
    exchange, queue, prefix = unique("okt_fx"), unique("okt_fq"), unique("okt")
    conn = await aio_pika.connect(RABBIT)
    async with conn:
        ch = await conn.channel()
        x = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        await q.bind(x, f"{prefix}.#")
    yield exchange, queue, prefix
    conn = await aio_pika.connect(RABBIT)
    async with conn:
        ch = await conn.channel()
        await ch.queue_delete(queue)
        await ch.exchange_delete(exchange)


async def test_rabbitmq_exchange_deleted_under_the_publisher_is_classed_and_recovers(
    rabbit_setup: tuple[str, str, str],
) -> None:
    exchange, queue, prefix = rabbit_setup
    pub = RabbitMQPublisher(f"{RABBIT}?exchange={exchange}", ack_timeout=3.0)
    await pub.connect()
    try:
        assert await outcome(pub, ev(f"{prefix}.a")) is None
        conn = await aio_pika.connect(RABBIT)
        async with conn:
            ch = await conn.channel()
            await ch.exchange_delete(exchange)
            # The broker closes the publisher's channel: 404 NOT_FOUND - no exchange.
            error = await outcome(pub, ev(f"{prefix}.a"))
            assert type(error) is UnroutableError, error
            assert "NOT_FOUND" in str(error)
            # The robust channel reopened and declared the exchange again; the binding went with
            # the old exchange, so the next one is returned (H8) until a queue is bound again.
            returned = await outcome(pub, ev(f"{prefix}.a"))
            assert type(returned) is UnroutableError and "NO_ROUTE" in str(returned), returned
            q = await ch.get_queue(queue)
            await q.bind(exchange, f"{prefix}.#")
        assert await outcome(pub, ev(f"{prefix}.a")) is None
    finally:
        await pub.close()


@pytest.fixture(scope="module")
def rabbit_node() -> Iterator[Any]:
    from outboxkit.testing.rabbitmq_server import RabbitMQServer, rabbitmq_server_binary

    need(rabbitmq_server_binary)
    with RabbitMQServer() as node:
        yield node


async def test_rabbitmq_channel_that_cannot_reopen_is_closed_for_good(
    rabbit_node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker closes the channel (an oversized message) and aio-pika's restore cannot declare
    the exchange again (someone re-created it as a fanout): the robust channel stays closed until
    the connection drops, which may be never. That is UnavailableError naming both reasons, not a
    TransientError per publish forever; a new publisher (after the exchange is fixed) works."""
    exchange = unique("okt_fx")
    conn = await aio_pika.connect(rabbit_node.url)
    async with conn:
        ch = await conn.channel()
        x = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue(unique("okt_fq"), durable=True)
        await q.bind(x, "f.#")
        pub = RabbitMQPublisher(f"{rabbit_node.url}?exchange={exchange}", ack_timeout=2.0)
        await pub.connect()
        try:
            assert await outcome(pub, ev("f.a")) is None
            await ch.exchange_delete(exchange)
            await ch.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
            big = await outcome(pub, ev("f.a", b"x" * (2 * rabbit_node.max_message_size)))
            assert type(big) is PermanentError, big
            caplog.set_level(logging.WARNING, "outboxkit.rabbitmq")
            for _ in range(3):
                error = await outcome(pub, ev("f.a"))
                assert type(error) is UnavailableError, error
                assert "inequivalent arg 'type'" in str(error)
        finally:
            await pub.close()
        dead = [r for r in caplog.records if "closed for good" in r.getMessage()]
        assert len(dead) == 1, [r.getMessage() for r in dead]
        await ch.exchange_delete(exchange)
        fresh = RabbitMQPublisher(f"{rabbit_node.url}?exchange={exchange}", ack_timeout=2.0)
        await fresh.connect()  # declares the topic exchange again
        try:
            x = await ch.get_exchange(exchange)
            await q.bind(x, "f.#")
            assert await outcome(fresh, ev("f.b")) is None
        finally:
            await fresh.close()


# -- Redis ---------------------------------------------------------------------------------------------


def redis_server(*extra: str) -> Any:
    from outboxkit.testing.redis_server import RedisServer, redis_server_binary

    need(redis_server_binary)

    class Configured(RedisServer):
        def command(self) -> list[str]:
            return [*super().command(), *extra]

    return Configured(appendonly=False)


async def test_redis_oom_is_an_outage_and_delivery_resumes_when_memory_frees() -> None:
    with redis_server("--maxmemory", "2mb", "--maxmemory-policy", "noeviction") as server:
        client = Redis.from_url(server.url)
        pub = RedisPublisher(server.url, ack_timeout=3.0)
        await pub.connect()
        try:
            assert await outcome(pub, ev("s.a")) is None
            # Fill the server up to maxmemory, in small steps: a big write is refused while its own
            # query buffer counts, and the memory used can then still be under the limit.
            for i in range(100_000):
                try:
                    await client.set(f"fill{i}", b"x" * (50_000 if i < 30 else 500))
                except Exception as exc:
                    if i >= 30:
                        assert "maxmemory" in str(exc), exc
                        break
            error = await outcome(pub, ev("s.a"))
            assert type(error) is UnavailableError, error
            assert "OOM" in str(error)
            await client.config_set("maxmemory", "0")
            assert await outcome(pub, ev("s.a")) is None
        finally:
            await pub.close()
            await client.aclose()


async def test_redis_readonly_replica_is_an_outage_until_it_is_primary_again() -> None:
    with redis_server() as primary, redis_server() as replica:
        admin = Redis.from_url(replica.url)
        pub = RedisPublisher(replica.url, ack_timeout=3.0)
        await pub.connect()
        try:
            assert await outcome(pub, ev("s.a")) is None
            await admin.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))  # a failover, seen from here
            error = await outcome(pub, ev("s.a"))
            assert type(error) is UnavailableError, error
            assert "READONLY" in str(error)
            await admin.execute_command("REPLICAOF", "NO", "ONE")
            assert await outcome(pub, ev("s.a")) is None
        finally:
            await pub.close()
            await admin.aclose()


async def test_redis_acl_refusal_is_unroutable_and_an_unknown_err_is_counted() -> None:
    with redis_server() as server:
        admin = Redis.from_url(server.url)
        pub = RedisPublisher(server.url, ack_timeout=3.0)
        await pub.connect()
        try:
            await admin.execute_command("ACL", "SETUSER", "default", "on", "nopass", "~*", "&*", "+@all", "-xadd")
            denied = await outcome(pub, ev("s.a"))
            assert type(denied) is UnroutableError, denied  # redis-py strips "NOPERM": it was never matched
            assert "NOPERM" in str(denied)
            await admin.execute_command("ACL", "SETUSER", "default", "+xadd")
            assert await outcome(pub, ev("s.a")) is None
        finally:
            await pub.close()
            await admin.aclose()
    with redis_server("--rename-command", "XADD", '""') as server:
        pub = RedisPublisher(server.url, ack_timeout=3.0)
        await pub.connect()
        try:
            unknown = await outcome(pub, ev("s.a"))
            assert type(unknown) is TransientError, unknown  # counted: ends as a dead letter
            assert "unknown command" in str(unknown)
        finally:
            await pub.close()


async def test_redis_lost_connection_is_an_outage_not_an_attempt() -> None:
    with redis_server() as server, TcpProxy("127.0.0.1", server.port) as proxy:
        pub = RedisPublisher(f"redis://127.0.0.1:{proxy.port}/0", ack_timeout=3.0)
        await pub.connect()
        try:
            assert await outcome(pub, ev("s.a")) is None
            proxy.block()
            error = await outcome(pub, ev("s.a"))
            assert type(error) is UnavailableError, error
            proxy.unblock()
            for _ in range(20):
                if await outcome(pub, ev("s.a")) is None:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the publisher did not reconnect")
        finally:
            await pub.close()


# -- Kafka (librdkafka's in-process mock cluster: no broker to start) ------------------------------------


async def test_kafka_fatal_error_replaces_the_producer_and_what_it_held_is_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # linger.ms keeps messages queued in the producer long enough to be caught by the fatal error.
    pub = KafkaPublisher("kafka://127.0.0.1:9", ack_timeout=10.0, **{"test.mock.num.brokers": 1, "linger.ms": 3000})
    await pub.connect()
    try:
        queued = [await pub.publish(ev("k.a")) for _ in range(3)]
        old = pub._producer
        caplog.set_level(logging.ERROR, "outboxkit.kafka")
        # What librdkafka reports on its thread when the idempotent producer's state is broken.
        pub._on_error(KafkaError(KafkaError._FATAL, "Broker: Broker received an out of order sequence", fatal=True))
        after = await pub.publish(ev("k.a"))
        assert pub._producer is not old, "a new producer sends after a fatal error"
        for fut in queued:
            with pytest.raises(UnavailableError):
                await fut
        await asyncio.wait_for(after, 10)
    finally:
        await pub.close()
    assert any("fatal" in r.getMessage() for r in caplog.records)


# -- MQTT ----------------------------------------------------------------------------------------------


async def test_mqtt_broker_disconnect_is_unavailable_and_a_new_publisher_works(tmp_path: Path) -> None:
    from outboxkit.testing.mqtt_server import MosquittoServer, mosquitto_binary

    need(mosquitto_binary)
    with MosquittoServer(str(tmp_path / "mosquitto")) as server:
        url = f"{server.url}?require_subscriber=false"
        pub = MqttPublisher(url, ack_timeout=3.0)
        await pub.connect()
        try:
            assert await outcome(pub, ev("m.a")) is None
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(0.5)  # aiomqtt notices the closed socket
            for _ in range(3):
                error = await outcome(pub, ev("m.a"))
                assert type(error) is UnavailableError, error  # aiomqtt does not reconnect: we do
            await asyncio.to_thread(server.start)
            fresh = MqttPublisher(url, ack_timeout=3.0)
            await fresh.connect()
            try:
                assert await outcome(fresh, ev("m.b")) is None
            finally:
                await fresh.close()
            for _ in range(50):  # the old one reconnects in the background too
                if await outcome(pub, ev("m.c")) is None:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the old publisher never reconnected")
        finally:
            await pub.close()


# -- consumers: nothing raw escapes --------------------------------------------------------------------


async def expect_classed(call: Any) -> DeliveryError:
    with pytest.raises(OutboxkitError) as info:
        await call
    assert isinstance(info.value, TransientError), info.value  # the runner retries or reconnects
    assert isinstance(info.value.__cause__, Unheard)
    return info.value


class Raising:
    """Stands for a library object whose every method raises an exception no table knows."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*_: Any, **__: Any) -> Any:
            raise Unheard(name)

        return fail


async def test_nats_consumer_unknown_exceptions_are_classed(nats_server: NatsServer) -> None:
    consumer = NatsConsumer(nats_server.url, group=unique("g"), topics=["f.>"])
    await consumer.connect()
    try:
        incoming = Incoming(message=None, handle=Raising())  # type: ignore[arg-type]
        await expect_classed(consumer.ack(incoming))
        await expect_classed(consumer.retry(incoming, 1.0))
        consumer._sub = Raising()
        await expect_classed(consumer.receive(10, 0.1))
    finally:
        await consumer.close()


async def test_rabbitmq_consumer_unknown_exceptions_are_classed(rabbit_setup: tuple[str, str, str]) -> None:
    exchange, _, prefix = rabbit_setup
    consumer = RabbitMQConsumer(f"{RABBIT}?exchange={exchange}", group=unique("okt_g"), topics=[f"{prefix}.#"])
    await consumer.connect()
    try:
        incoming = Incoming(message=None, handle=Raising())  # type: ignore[arg-type]
        await expect_classed(consumer.ack(incoming))

        def fail(*_: Any) -> Any:
            raise Unheard("queue")

        consumer._inbox = type("Failing", (), {"qsize": fail, "get": fail, "get_nowait": fail})()  # type: ignore[assignment]
        await expect_classed(consumer.receive(10, 0.1))
    finally:
        await consumer.close()
        conn = await aio_pika.connect(RABBIT)
        async with conn:
            await (await conn.channel()).queue_delete(consumer.group)


async def test_redis_consumer_unknown_exceptions_are_classed() -> None:
    require("Redis", "127.0.0.1", 6379)
    topic = unique("okt_s")
    consumer = RedisConsumer(REDIS, group=unique("g"), topics=[topic])
    await consumer.connect()
    try:
        assert consumer._client is not None
        consumer._client.execute_command = Raising().execute_command  # type: ignore[method-assign]
        incoming = Incoming(message=None, handle=(topic, "1-0"))  # type: ignore[arg-type]
        await expect_classed(consumer.receive(10, 0.1))
        await expect_classed(consumer.ack(incoming))
        await expect_classed(consumer.retry(incoming, 1.0))
    finally:
        await consumer.close()
        client = Redis.from_url(REDIS)
        await client.delete(topic)
        await client.aclose()


async def test_mqtt_consumer_unknown_exceptions_are_classed() -> None:
    require("Mosquitto", "127.0.0.1", 1883)
    consumer = MqttConsumer(MQTT, group=unique("g"), topics=[unique("okt") + ".>"])
    await consumer.connect()
    try:
        consumer._ready = Raising()  # type: ignore[assignment]
        await expect_classed(consumer.receive(10, 0.1))
    finally:
        await consumer.close()
        from outboxkit.brokers.mqtt import drop_session

        await drop_session(MQTT, consumer.group)


async def test_kafka_consumer_unknown_exceptions_are_classed() -> None:
    from outboxkit.testing.kafka_server import TansuServer, tansu_binary

    need(tansu_binary)

    def fail(*_: Any, **__: Any) -> Any:
        raise Unheard("librdkafka")

    with TansuServer() as server:
        topic = unique("okt") + ".faults"
        consumer = KafkaConsumer(server.url, group=unique("g"), topics=[topic], assign=True)
        await consumer.connect()
        real = consumer._consumer
        try:
            consumer._consumer = type("Failing", (), {"consume": fail, "commit": fail, "pause": fail})()  # type: ignore[assignment]
            await expect_classed(consumer.receive(10, 0.1))
            partition = consumer._parts[(topic, 0)]
            partition.outstanding[0] = None  # as if offset 0 had been handed out
            partition.next_offset = 1
            await expect_classed(consumer.ack(Incoming(message=None, handle=(topic, 0, 0))))  # type: ignore[arg-type]
            partition.outstanding[0] = None
            await expect_classed(consumer.retry(Incoming(message=None, handle=(topic, 0, 0)), 1.0))  # type: ignore[arg-type]
        finally:
            consumer._consumer = real
            await consumer.close()


async def test_rabbitmq_consumer_channel_that_cannot_reopen_is_unavailable(
    rabbit_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's side of the same trap: its channel closed by the broker, aio-pika's restore
    failing, nothing delivered ever again, silently. The runner must hear UnavailableError."""
    from outboxkit.brokers.rabbitmq import consumer as rabbit_consumer

    monkeypatch.setattr(rabbit_consumer, "_REOPEN_GRACE", 0.5)
    exchange = unique("okt_fx")
    consumer = RabbitMQConsumer(f"{rabbit_node.url}?exchange={exchange}", group=unique("okt_g"), topics=["f.#"])
    await consumer.connect()
    conn = await aio_pika.connect(rabbit_node.url)
    try:
        async with conn:
            ch = await conn.channel()
            await ch.exchange_delete(exchange)
            await ch.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
            # A protocol error on the consumer's channel (an ack of a delivery tag it never got):
            # the broker closes the channel; the robust restore then fails on the exchange type.
            assert consumer._channel is not None
            underlay = await consumer._channel.get_underlay_channel()
            await underlay.basic_ack(delivery_tag=999)
            error: BaseException | None = None
            for _ in range(30):
                try:
                    await consumer.receive(10, 0.1)
                except UnavailableError as exc:
                    error = exc
                    break
            assert error is not None, "a dead channel was never reported"
            assert "did not reopen" in str(error)
            await ch.exchange_delete(exchange)
    finally:
        await consumer.close()
