"""The ``kafka://`` URL, librdkafka's logs at DEBUG, and topic creation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, UnroutableError

#: URL options read by outboxkit itself; every other ``?name=value`` goes to librdkafka as is.
_OWN_OPTIONS = frozenset({"assign", "ack_timeout"})


@dataclass(frozen=True)
class KafkaUrl:
    """``kafka://[user:password@]host:9092[,host2:9092][?option=value...]``, parsed."""

    config: dict[str, str]  # librdkafka settings: bootstrap.servers, SASL, pass-through options
    options: dict[str, str] = field(default_factory=dict)  # outboxkit's own (assign, ack_timeout)


def parse_url(url: str) -> KafkaUrl:
    """Split a ``kafka://`` URL into librdkafka settings and outboxkit options."""
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise ConfigurationError(f"not a Kafka URL: {redact_url(url)!r} (use kafka://host:9092)")
    # urlsplit cannot parse a host list (".port" fails on "a:1,b:2"), so split the netloc by hand.
    userinfo, _, hosts = parts.netloc.rpartition("@")
    servers = []
    for host in hosts.split(","):
        name, _, port = host.strip().rpartition(":") if ":" in host else (host.strip(), "", "9092")
        if not name or not port.isdigit():
            raise ConfigurationError(f"bad host:port {host!r} in Kafka URL {redact_url(url)!r}")
        servers.append(f"{name}:{port}")
    config = {"bootstrap.servers": ",".join(servers)}
    if userinfo:
        user, _, password = userinfo.partition(":")
        # Credentials in the URL mean SASL; TLS and the mechanism stay overridable by options.
        config.update(
            {
                "sasl.username": unquote(user),
                "sasl.password": unquote(password),
                "sasl.mechanism": "PLAIN",
                "security.protocol": "SASL_PLAINTEXT",
            }
        )
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (options if name in _OWN_OPTIONS else config)[name] = value
    return KafkaUrl(config, options)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


class _LibrdkafkaLog:
    """librdkafka logs every failed reconnect; outboxkit logs one line per outage instead, so its
    own chatter goes to DEBUG (``outboxkit.kafka.librdkafka``)."""

    _log = logging.getLogger("outboxkit.kafka.librdkafka")

    def log(self, level: int, msg: str, *args: object) -> None:
        self._log.debug(msg, *args)


def ensure_topics(config: dict[str, Any], topics: Sequence[str], timeout: float = 10.0) -> None:
    """Create ``topics`` with the brokers' default partition count and replication factor, unless
    they exist (idempotent). Blocking."""
    admin_config = {k: v for k, v in config.items() if k in _ADMIN_KEYS or k.startswith(("sasl.", "ssl."))}
    admin = AdminClient(admin_config)
    # num_partitions=-1 / replication_factor=-1: the brokers' num.partitions / default.replication.factor.
    futures = admin.create_topics([NewTopic(t, -1, -1) for t in topics], operation_timeout=timeout)
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise UnroutableError(f"cannot create Kafka topic {topic!r}: {exc.args[0].str()}") from None


_ADMIN_KEYS = frozenset({"bootstrap.servers", "security.protocol", "client.id", "socket.connection.setup.timeout.ms"})
