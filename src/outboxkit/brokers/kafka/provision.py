"""Kafka provisioning: each topic the relay publishes to, with its partitions and replication.

Kafka topics are named one by one (no wildcards). A new topic gets ``--partitions`` (the upper bound
on consumer parallelism: a key stays in one partition, G5) and ``--replication`` (3 in production,
with ``min.insync.replicas=2`` set on the topic so that ``acks=all`` means two copies, H7); left
unset, the brokers' ``num.partitions`` and ``default.replication.factor`` apply. On an existing
topic, ``--partitions`` larger than its count adds partitions (Kafka cannot remove any; note that
keys then hash to other partitions, so order holds only from then on); a different replication
factor is reported, not changed (that needs a reassignment plan).
"""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions, NewTopic

from outboxkit.brokers.kafka.client import parse_url
from outboxkit.brokers.provision import ProvisionRequest, Step
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, UnavailableError

_ADMIN_PREFIXES = ("sasl.", "ssl.")
_ADMIN_KEYS = frozenset({"bootstrap.servers", "security.protocol", "client.id"})
_TIMEOUT = 10.0


def _admin(url: str) -> AdminClient:
    config: dict[str, Any] = {
        k: v for k, v in parse_url(url).config.items() if k in _ADMIN_KEYS or k.startswith(_ADMIN_PREFIXES)
    }
    config["socket.connection.setup.timeout.ms"] = 3000
    return AdminClient(config)


def _describe(partitions: int | None, replication: int | None) -> str:
    parts = f"{partitions} partition(s)" if partitions and partitions > 0 else "the brokers' default partitions"
    repl = f"replication factor {replication}" if replication and replication > 0 else "default replication"
    return f"{parts}, {repl}"


def _provision(url: str, request: ProvisionRequest, dry_run: bool) -> list[Step]:
    admin = _admin(url)
    try:
        metadata = admin.list_topics(timeout=5)
    except KafkaException as exc:
        raise UnavailableError(f"Kafka at {redact_url(url)} is unavailable: {exc.args[0].str()}") from None
    steps: list[Step] = []
    create: list[NewTopic] = []
    grow: list[NewPartitions] = []
    for topic in request.topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            config = {"min.insync.replicas": "2"} if (request.replication or 0) >= 3 else {}
            create.append(NewTopic(topic, request.partitions or -1, request.replication or -1, config=config))
            steps.append(Step("create", "topic", topic, _describe(request.partitions, request.replication)))
            continue
        count = len(found.partitions)
        replicas = len(next(iter(found.partitions.values())).replicas) if found.partitions else 0
        if request.partitions and request.partitions > count:
            grow.append(NewPartitions(topic, request.partitions))
            steps.append(Step("update", "topic", topic, f"partitions {count} -> {request.partitions}"))
        else:
            steps.append(Step("unchanged", "topic", topic, _describe(count, replicas)))
            if request.partitions and request.partitions < count:
                steps.append(Step("warning", "topic", topic, f"has {count} partitions; Kafka cannot reduce them"))
        if request.replication and replicas and request.replication != replicas:
            steps.append(
                Step(
                    "warning",
                    "topic",
                    topic,
                    f"replication factor is {replicas}, not {request.replication}: change it with a "
                    "partition reassignment (kafka-reassign-partitions), outboxkit does not",
                )
            )
    if dry_run:
        return steps
    futures = {}
    if create:
        futures.update(admin.create_topics(create, operation_timeout=_TIMEOUT))
    if grow:
        futures.update(admin.create_partitions(grow, operation_timeout=_TIMEOUT))
    for topic, future in futures.items():
        try:
            future.result(_TIMEOUT)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # created meanwhile by someone else: what we wanted
            reason = error.str() if isinstance(error, KafkaError) else str(error)
            raise ConfigurationError(f"Kafka refused topic {topic!r}: {reason}") from None
    return steps


async def provision(url: str, request: ProvisionRequest, *, dry_run: bool) -> list[Step]:
    """Create the missing topics (blocking admin calls, run in a thread)."""
    if not request.topics:
        raise ConfigurationError("provision needs at least one --topic")
    return await asyncio.to_thread(_provision, url, request, dry_run)


__all__ = ["provision"]
