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
from outboxkit.brokers.provision import Provision
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
#: The schemes an "unsupported broker URL" error names: one per bus (the TLS variants go unsaid).
SUPPORTED = "nats://, amqp://, kafka://, redis:// or mqtt://"


def _load(url: str, which: int) -> Any:
    scheme = scheme_of(url)
    entry = _BUSES.get(scheme)
    if entry is None:
        raise ConfigurationError(f"unsupported broker URL {redact_url(url)!r}: use {SUPPORTED}")
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


# -- topics and provisioning ------------------------------------------------------------------------

#: scheme -> what a topic names on that bus, for the buses whose consumers take no wildcards
_LITERAL_TOPICS: dict[str, str] = {
    "kafka": "Kafka topics are named one by one",
    "redis": "Redis streams are named one by one",
    "rediss": "Redis streams are named one by one",
}
_WILDCARDS = frozenset("*>#+")


def check_topics(url: str, topics: Sequence[str]) -> None:
    """Refuse, as bad configuration, a wildcard topic on a bus whose topics have no wildcards.

    Without this, ``--topic 'orders.*'`` on Redis would read a stream literally named ``orders.*``,
    which no event can ever reach (``emit`` refuses such topics), and wait forever."""
    scheme = scheme_of(url)
    why = _LITERAL_TOPICS.get(scheme)
    if why is None:
        return
    for topic in topics:
        if _WILDCARDS & set(topic):
            raise ConfigurationError(
                f"{topic!r} is a pattern, but {scheme}:// has no wildcards ({why}): "
                "pass each topic as its own --topic, for example --topic orders.created"
            )


#: scheme -> the module under outboxkit.brokers whose ``provision`` function serves it
_PROVISION: dict[str, str] = {
    "nats": "nats.provision",
    "tls": "nats.provision",
    "amqp": "rabbitmq.provision",
    "amqps": "rabbitmq.provision",
    "kafka": "kafka.provision",
    "redis": "redis.provision",
    "rediss": "redis.provision",
    "mqtt": "mqtt.provision",
    "mqtts": "mqtt.provision",
}


def provisioner_for(url: str) -> Provision:
    """The bus's ``provision`` function for ``url`` (see ``outboxkit.brokers.provision``)."""
    scheme = scheme_of(url)
    module_name = _PROVISION.get(scheme)
    if module_name is None:
        raise ConfigurationError(f"unsupported broker URL {redact_url(url)!r}: use {SUPPORTED}")
    extra = _BUSES[scheme][3]
    try:
        module = importlib.import_module(f"outboxkit.brokers.{module_name}")
    except ImportError as exc:
        raise ConfigurationError(f"{scheme}:// needs `pip install 'outboxkit[{extra}]'` ({exc})") from None
    fn: Provision = module.provision
    return fn
