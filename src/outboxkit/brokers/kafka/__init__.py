"""Kafka: idempotent producer with ``acks=all``, message key = event key, CloudEvents ``ce_`` headers.

The producer is librdkafka's (confluent-kafka) with ``enable.idempotence=true``: the broker drops a
retried batch it already stored (the producer id + sequence numbers are Kafka's native dedupe, G4),
and retries inside the client never reorder a partition. The event key is the message key, so a
key's events land in one partition in send order (G5); keys are hashed with ``murmur2_random``, the
Java client's partitioner, so other Kafka clients put the same key in the same partition.

librdkafka reconnects by itself after an outage (G8); a poll thread turns its delivery reports into
resolved asyncio futures on the relay's event loop.

Durability (H7): ``acks=all`` waits for every in-sync replica, which is only as safe as the topic's
``replication.factor`` (>= 3) and ``min.insync.replicas`` (>= 2); Kafka does not fsync per message.

The adapter: ``client`` (URL, librdkafka settings and logs, topic creation), ``wire`` (CloudEvents
Kafka binding), ``publisher``, ``consumer`` and ``errors`` (the code table, H12; docs/exceptions.md).
"""

from outboxkit.brokers.kafka.client import KafkaUrl, ensure_topics, parse_url
from outboxkit.brokers.kafka.consumer import KafkaConsumer, read_topics
from outboxkit.brokers.kafka.errors import CODES, translate
from outboxkit.brokers.kafka.publisher import KafkaPublisher
from outboxkit.brokers.kafka.wire import delivered_from, kafka_headers

__all__ = [
    "CODES",
    "KafkaConsumer",
    "KafkaPublisher",
    "KafkaUrl",
    "delivered_from",
    "ensure_topics",
    "kafka_headers",
    "parse_url",
    "read_topics",
    "translate",
]
