"""CloudEvents on AMQP 0-9-1: ``cloudEvents:`` (AMQP binding) and ``ce-`` (RabbitMQ binding) headers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions
from pamqp.common import FieldValue

from outboxkit.brokers.base import Delivered
from outboxkit.core.envelope import OutboxEvent, cloudevent_attributes

#: the CloudEvents AMQP binding's prefix (the SDK's ``bindings.amqp`` reads it and ``cloudEvents_``)
CE_AMQP_PREFIX = "cloudEvents:"


#: the CloudEvents RabbitMQ binding's prefix (the SDK's ``bindings.rabbitmq``)
CE_RABBITMQ_PREFIX = "ce-"


PERSISTENT = 2  # AMQP delivery_mode


def amqp_headers(
    event: OutboxEvent, default_source: str, prefixes: Sequence[str] = (CE_AMQP_PREFIX,)
) -> dict[str, str]:
    """User headers plus the CloudEvents attributes under each binding prefix (``datacontenttype``
    travels as the ``content_type`` property instead)."""
    headers = dict(event.headers)
    attrs = cloudevent_attributes(event, default_source)
    del attrs["datacontenttype"]
    if "traceparent" in headers:
        # The distributed tracing extension: SDKs see the W3C context as an attribute too.
        attrs["traceparent"] = headers["traceparent"]
    for prefix in prefixes:
        for name, value in attrs.items():
            headers[prefix + name] = value
    return headers


def amqp_properties(event: OutboxEvent, default_source: str, prefixes: Sequence[str]) -> aiormq.spec.Basic.Properties:
    headers: dict[str, FieldValue] = dict(amqp_headers(event, default_source, prefixes))
    return aiormq.spec.Basic.Properties(
        content_type=event.content_type,
        delivery_mode=PERSISTENT,
        message_id=event.id,
        headers=headers,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def delivered_from(message: aio_pika.abc.AbstractIncomingMessage) -> Delivered:
    """Decode the CloudEvents attributes of either binding; ``message_id`` is the fallback id."""
    headers = {k: _text(v) for k, v in (message.headers or {}).items() if v is not None}

    def attr(name: str) -> str | None:
        return headers.get(CE_AMQP_PREFIX + name) or headers.get(CE_RABBITMQ_PREFIX + name)

    return Delivered(
        event_id=attr("id") or message.message_id or "",
        topic=message.routing_key or "",
        key=attr("subject"),
        payload=message.body,
        headers=headers,
    )


def attempt_of(message: aio_pika.abc.AbstractIncomingMessage) -> int:
    """Quorum queues count earlier deliveries in ``x-delivery-count`` (absent on the first)."""
    count = (message.headers or {}).get("x-delivery-count")
    if isinstance(count, int):
        return count + 1
    return 2 if message.redelivered else 1
