"""URL scheme -> broker adapter. The one place that knows every bus module.

Each bus lives in its own module ``outboxkit.brokers.<bus>`` with ``<Bus>Publisher(url, *, source,
max_in_flight)`` and ``<Bus>Consumer(url, *, group, topics)``; modules are imported lazily so that a
missing optional dependency only matters for the bus that needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from outboxkit.brokers.base import Consumer, Publisher
from outboxkit.core.urls import redact_url, scheme_of
from outboxkit.errors import ConfigurationError

#: scheme -> (module, publisher class, consumer class, pip extra)
_BUSES: dict[str, tuple[str, str, str, str]] = {
    "nats": ("nats", "NatsPublisher", "NatsConsumer", "nats"),
    "tls": ("nats", "NatsPublisher", "NatsConsumer", "nats"),
    "amqp": ("rabbitmq", "RabbitMQPublisher", "RabbitMQConsumer", "rabbitmq"),
    "amqps": ("rabbitmq", "RabbitMQPublisher", "RabbitMQConsumer", "rabbitmq"),
    "kafka": ("kafka", "KafkaPublisher", "KafkaConsumer", "kafka"),
    "redis": ("redis", "RedisPublisher", "RedisConsumer", "redis"),
    "rediss": ("redis", "RedisPublisher", "RedisConsumer", "redis"),
    "mqtt": ("mqtt", "MqttPublisher", "MqttConsumer", "mqtt"),
    "mqtts": ("mqtt", "MqttPublisher", "MqttConsumer", "mqtt"),
}

SCHEMES = frozenset(_BUSES)


def _load(url: str, which: int) -> Any:
    scheme = scheme_of(url)
    entry = _BUSES.get(scheme)
    if entry is None:
        raise ConfigurationError(
            f"unsupported broker URL {redact_url(url)!r}: use nats://, amqp://, kafka://, redis:// or mqtt://"
        )
    module_name, extra = entry[0], entry[3]
    try:
        module = importlib.import_module(f"outboxkit.brokers.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"outboxkit.brokers.{module_name}":
            raise ConfigurationError(f"the {scheme}:// adapter is planned but not in this release") from None
        raise ConfigurationError(f"{scheme}:// needs `pip install 'outboxkit[{extra}]'` ({exc})") from None
    except ImportError as exc:
        raise ConfigurationError(f"{scheme}:// needs `pip install 'outboxkit[{extra}]'` ({exc})") from None
    cls = getattr(module, entry[which], None)
    if cls is None:
        raise ConfigurationError(f"the {scheme}:// adapter has no {entry[which]} yet")
    return cls


def publisher_for(url: str, *, source: str = "/outboxkit", max_in_flight: int = 4096) -> Publisher:
    cls = _load(url, 1)
    publisher: Publisher = cls(url, source=source, max_in_flight=max_in_flight)
    return publisher


def consumer_for(url: str, *, group: str, topics: Sequence[str]) -> Consumer:
    cls = _load(url, 2)
    consumer: Consumer = cls(url, group=group, topics=list(topics))
    return consumer
