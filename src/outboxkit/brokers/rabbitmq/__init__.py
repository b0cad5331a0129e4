"""RabbitMQ (AMQP 0-9-1) through aio-pika: publisher confirms, ``mandatory`` publishes, quorum queues.

* Publisher: one robust connection, one confirm-mode channel, persistent messages to a durable topic
  exchange (``?exchange=NAME``, default ``outboxkit``) with the topic as routing key. Every publish is
  ``mandatory``: a message no queue takes comes back as ``basic.return`` and fails with
  ``UnroutableError`` instead of being confirmed into the void (H8). ``message_id`` = event id (G4;
  RabbitMQ itself does not de-duplicate, consumers do with the inbox).
* Wire format: CloudEvents binary mode per the CloudEvents AMQP binding: attributes as
  ``cloudEvents:<name>`` headers (AMQP 1.0 application properties once RabbitMQ translates them),
  ``datacontenttype`` as the ``content_type`` property; by default also as ``ce-<name>`` headers, which
  is what the SDK's RabbitMQ (knative) binding reads.
* Consumer: a durable quorum queue named after the group, bound with each topic as binding key,
  manual acks, ``attempt`` from the quorum queue's ``x-delivery-count``.

Durability (H7): a confirm for a persistent message routed to a durable (quorum or classic) queue is
sent after the broker wrote it to disk; a transient queue or a non-durable exchange loses it on restart.

The adapter: ``client`` (URL settings, the robust connection, one log line per outage), ``wire``
(CloudEvents AMQP bindings), ``publisher``, ``consumer`` and ``errors`` (the translation tables, H12;
docs/exceptions.md).
"""

from outboxkit.brokers.rabbitmq.client import DEFAULT_EXCHANGE, blocked, connect, declare_exchange, probe
from outboxkit.brokers.rabbitmq.consumer import RabbitMQConsumer
from outboxkit.brokers.rabbitmq.errors import CONSUMER_ERRORS, PUBLISH_ERRORS, translate
from outboxkit.brokers.rabbitmq.publisher import RabbitMQPublisher
from outboxkit.brokers.rabbitmq.wire import (
    CE_AMQP_PREFIX,
    CE_RABBITMQ_PREFIX,
    PERSISTENT,
    amqp_headers,
    amqp_properties,
    attempt_of,
    delivered_from,
)

__all__ = [
    "CE_AMQP_PREFIX",
    "CE_RABBITMQ_PREFIX",
    "CONSUMER_ERRORS",
    "DEFAULT_EXCHANGE",
    "PERSISTENT",
    "PUBLISH_ERRORS",
    "RabbitMQConsumer",
    "RabbitMQPublisher",
    "amqp_headers",
    "amqp_properties",
    "attempt_of",
    "blocked",
    "connect",
    "declare_exchange",
    "delivered_from",
    "probe",
    "translate",
]
