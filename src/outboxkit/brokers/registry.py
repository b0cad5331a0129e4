"""URL scheme -> publisher adapter. The one place that knows every bus module."""

from __future__ import annotations

from outboxkit.brokers.base import Publisher
from outboxkit.core.urls import redact_url, scheme_of
from outboxkit.errors import ConfigurationError

_PLANNED = {"amqp", "amqps", "kafka", "redis", "rediss", "mqtt", "mqtts"}


def publisher_for(url: str, *, source: str = "/outboxkit", max_in_flight: int = 4096) -> Publisher:
    scheme = scheme_of(url)
    if scheme in ("nats", "tls"):
        try:
            from outboxkit.brokers.nats import NatsPublisher
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise ConfigurationError("NATS support needs `pip install outboxkit[nats]`") from exc
        return NatsPublisher(url, source=source, max_in_flight=max_in_flight)
    if scheme in _PLANNED:
        raise ConfigurationError(f"the {scheme}:// publisher is planned but not in this release; use nats://")
    raise ConfigurationError(f"unsupported broker URL {redact_url(url)!r}: use nats://host:4222")
