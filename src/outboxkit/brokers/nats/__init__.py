"""NATS JetStream: publish with PubAck, ``Nats-Msg-Id`` = event id, CloudEvents binary headers.

JetStream is at-least-once with a dedupe window (2 minutes by default) keyed by ``Nats-Msg-Id``,
so a re-publish after a relay crash inside that window is dropped by the server (G4, G6).
Durability (H7): JetStream acknowledges before fsync (``sync_interval`` 2 min by default); run the
server with ``sync_interval: always`` or a replicated stream if an OS crash must not lose events.

The adapter: ``client`` (connection, helpers for subscribers), ``publisher``, ``consumer`` and
``errors`` (the translation tables, H12; docs/exceptions.md).
"""

from outboxkit.brokers.nats.client import connect, delivered_from, ensure_stream, probe, read_stream, split_options
from outboxkit.brokers.nats.consumer import NatsConsumer
from outboxkit.brokers.nats.errors import CONSUMER_ERRORS, JS_CODES, PUBLISH_ERRORS, translate
from outboxkit.brokers.nats.publisher import NatsPublisher

__all__ = [
    "CONSUMER_ERRORS",
    "JS_CODES",
    "PUBLISH_ERRORS",
    "NatsConsumer",
    "NatsPublisher",
    "connect",
    "delivered_from",
    "ensure_stream",
    "probe",
    "read_stream",
    "split_options",
    "translate",
]
