"""``outboxkit provision`` on every bus: creates what the relay publishes into, durably configured;
a second run changes nothing; ``--dry-run`` changes nothing at all; buses that need nothing say so.

Each test works on names of its own (stream, exchange, queue, topic) and removes them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from outboxkit.brokers.nats.provision import covers, default_stream_name
from outboxkit.brokers.provision import ProvisionRequest, changed
from outboxkit.brokers.registry import provisioner_for
from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import ConfigurationError
from outboxkit.testing.kafka_server import TansuServer
from tests.conftest import require, unique

CLI = [sys.executable, "-m", "outboxkit"]
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def provision_cli(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run `outboxkit provision ... --json`; returns (exit code, steps, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
    result = subprocess.run([*CLI, "provision", *args, "--json"], capture_output=True, text=True, timeout=60, env=env)
    steps = json.loads(result.stdout)["steps"] if result.returncode == 0 else []
    return result.returncode, steps, result.stderr


def outcomes(steps: list[dict[str, Any]]) -> list[str]:
    return [s["outcome"] for s in steps]


# -- pure helpers --------------------------------------------------------------------------------


def test_nats_subject_cover_rules() -> None:
    assert covers("orders.>", "orders.created")
    assert covers("orders.>", "orders.eu.created")
    assert covers("orders.>", "orders.*")
    assert not covers("orders.>", "orders")
    assert covers("orders.*", "orders.created")
    assert not covers("orders.*", "orders.>")
    assert not covers("orders.*", "orders.eu.created")
    assert covers("orders.created", "orders.created")
    assert not covers("orders.created", "orders.*")
    assert default_stream_name(["orders.>"]) == "ORDERS"
    assert default_stream_name(["my-app.orders"]) == "MY-APP"
    with pytest.raises(ConfigurationError):
        default_stream_name([">"])


# -- NATS JetStream ------------------------------------------------------------------------------


@pytest.fixture
def nats_names(nats_url: str) -> Iterator[tuple[str, str]]:
    stream, prefix = unique("PROV").upper(), unique("prov")
    yield stream, prefix

    async def drop() -> None:
        from outboxkit.brokers.nats import connect

        nc = await connect(nats_url)
        try:
            await nc.jetstream().delete_stream(stream)
        except Exception:
            pass
        finally:
            await nc.close()

    asyncio.run(drop())


async def stream_config(url: str, name: str) -> Any:
    from outboxkit.brokers.nats import connect

    nc = await connect(url)
    try:
        return (await nc.jetstream().stream_info(name)).config
    finally:
        await nc.close()


def test_nats_provision_creates_a_durable_stream_once(nats_url: str, nats_names: tuple[str, str]) -> None:
    stream, prefix = nats_names
    args = ["--broker", nats_url, "--topic", f"{prefix}.>", "--stream", stream]

    code, planned, _ = provision_cli(*args, "--dry-run")
    assert code == 0 and outcomes(planned) == ["create"]
    with pytest.raises(Exception, match="not found"):
        asyncio.run(stream_config(nats_url, stream))  # a dry run creates nothing

    code, first, err = provision_cli(*args)
    assert code == 0, err
    assert outcomes(first) == ["create"]
    config = asyncio.run(stream_config(nats_url, stream))
    assert config.subjects == [f"{prefix}.>"]
    assert config.storage == "file"  # StorageType is a str enum
    assert config.duplicate_window == 120.0

    code, second, _ = provision_cli(*args)
    assert code == 0 and outcomes(second) == ["unchanged"]
    assert asyncio.run(stream_config(nats_url, stream)) == config

    # A new topic and an explicit window are added to the same stream, and only then.
    code, third, _ = provision_cli(*args, "--topic", f"{prefix}x.*", "--duplicate-window", "60")
    assert code == 0 and outcomes(third) == ["update"]
    config = asyncio.run(stream_config(nats_url, stream))
    assert config.subjects == [f"{prefix}.>", f"{prefix}x.*"] and config.duplicate_window == 60.0
    assert outcomes(provision_cli(*args, "--topic", f"{prefix}x.*")[1]) == ["unchanged"]


async def test_nats_relay_publishes_into_the_provisioned_stream(nats_url: str, nats_names: tuple[str, str]) -> None:
    from outboxkit.brokers.nats import NatsPublisher

    stream, prefix = nats_names
    publisher = NatsPublisher(nats_url)
    await publisher.connect()
    try:
        event = OutboxEvent(seq=1, id=unique("e"), topic=f"{prefix}.created", payload=b"{}")
        with pytest.raises(Exception, match=r"outboxkit provision --broker URL --topic '" + prefix):
            await (await publisher.publish(event))  # before: unroutable, naming the command that fixes it
        steps = await provisioner_for(nats_url)(
            nats_url, ProvisionRequest((f"{prefix}.>",), stream=stream), dry_run=False
        )
        assert changed(steps)
        await (await publisher.publish(event))  # after: confirmed
    finally:
        await publisher.close()


# -- RabbitMQ ------------------------------------------------------------------------------------


@pytest.fixture
def amqp_names() -> Iterator[tuple[str, str]]:
    require("RabbitMQ", "127.0.0.1", 5672)
    exchange, queue = unique("prov_x"), unique("prov_q")
    yield exchange, queue

    async def drop() -> None:
        import aio_pika

        conn = await aio_pika.connect(AMQP)
        try:
            channel = await conn.channel()
            await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)
        finally:
            await conn.close()

    asyncio.run(drop())


def test_rabbitmq_provision_declares_exchange_and_quorum_queue_once(amqp_names: tuple[str, str]) -> None:
    exchange, queue = amqp_names
    url = f"{AMQP}?exchange={exchange}"
    args = ["--broker", url, "--topic", "orders.>", "--queue", queue]

    code, planned, _ = provision_cli(*args, "--dry-run")
    assert code == 0 and outcomes(planned) == ["create", "create", "create"]
    code, first, err = provision_cli(*args)
    assert code == 0, err
    assert [(s["kind"], s["outcome"]) for s in first] == [
        ("exchange", "create"),
        ("queue", "create"),
        ("binding", "create"),
    ]
    assert first[2]["detail"] == "orders.#"  # NATS-style '>' bound as AMQP '#'
    code, second, _ = provision_cli(*args)
    assert code == 0
    assert [(s["kind"], s["outcome"]) for s in second] == [
        ("exchange", "unchanged"),
        ("queue", "unchanged"),
        ("binding", "ensure"),  # AMQP cannot list bindings: declared again, a no-op
    ]
    assert not changed_steps(second)

    async def check() -> None:
        import aio_pika

        from outboxkit.brokers.rabbitmq import RabbitMQPublisher

        # The binding exists: a mandatory publish is routed and confirmed (not returned, H8)...
        publisher = RabbitMQPublisher(url)
        await publisher.connect()
        try:
            await (await publisher.publish(OutboxEvent(seq=1, id=unique("e"), topic="orders.eu.created", payload=b"1")))
        finally:
            await publisher.close()
        # ... into a durable quorum queue that holds it.
        conn = await aio_pika.connect(AMQP)
        try:
            channel = await conn.channel()
            declared = await channel.declare_queue(queue, passive=True)
            assert declared.declaration_result.message_count == 1
            with pytest.raises(Exception, match="PRECONDITION_FAILED"):
                await (await conn.channel()).declare_queue(queue, durable=True)  # not a classic queue
        finally:
            await conn.close()

    asyncio.run(check())


def changed_steps(steps: list[dict[str, Any]]) -> bool:
    return any(s["outcome"] in ("create", "update") for s in steps)


# -- Kafka (Tansu) -------------------------------------------------------------------------------


def test_kafka_provision_creates_topics_once_and_refuses_wildcards() -> None:
    with TansuServer() as tansu:
        topic = unique("prov")
        args = ["--broker", tansu.url, "--topic", topic, "--partitions", "3"]
        code, planned, _ = provision_cli(*args, "--dry-run")
        assert code == 0 and outcomes(planned) == ["create"]
        code, first, err = provision_cli(*args)
        assert code == 0, err
        assert outcomes(first) == ["create"] and "3 partition(s)" in first[0]["detail"]

        from confluent_kafka.admin import AdminClient

        metadata = AdminClient({"bootstrap.servers": tansu.url.split("://", 1)[1]}).list_topics(timeout=10)
        assert len(metadata.topics[topic].partitions) == 3
        code, second, _ = provision_cli(*args)
        assert code == 0 and outcomes(second) == ["unchanged"]
        assert "3 partition(s)" in second[0]["detail"]

        code, _, err = provision_cli("--broker", tansu.url, "--topic", "orders.*")
        assert code == 2 and "no wildcards" in err and "Traceback" not in err


# -- Redis and MQTT need nothing -----------------------------------------------------------------


def test_redis_provision_needs_nothing_and_says_so() -> None:
    require("Redis", "127.0.0.1", 6379)
    topic = unique("prov")
    for _ in range(2):
        code, steps, err = provision_cli("--broker", "redis://127.0.0.1:6379/0", "--topic", topic)
        assert code == 0, err
        assert steps[0]["outcome"] == "nothing" and "XADD creates" in steps[0]["detail"]
        assert not changed_steps(steps)
    code, _, err = provision_cli("--broker", "redis://127.0.0.1:6379/0", "--topic", "nu.*")
    assert code == 2 and "no wildcards" in err


def test_mqtt_provision_needs_nothing_and_says_so() -> None:
    for _ in range(2):
        code, steps, err = provision_cli("--broker", "mqtt://127.0.0.1:1883", "--topic", "orders.>")
        assert code == 0, err
        assert [(s["outcome"], s["name"]) for s in steps] == [("nothing", "orders/#")]
        assert "outboxkit consume" in steps[0]["detail"]


def test_provision_text_output_and_bad_input(nats_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
    result = subprocess.run(
        [*CLI, "provision", "--broker", nats_url, "--topic", "a#b"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2 and result.stderr.startswith("error: 'a#b' is not a NATS subject pattern")
    result = subprocess.run(
        [*CLI, "provision", "--broker", nats_url, "--topic", f"{unique('prov')}.>", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0 and result.stdout.startswith("would create stream PROV_")
