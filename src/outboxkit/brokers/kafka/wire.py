"""CloudEvents on Kafka (binary mode, ``ce_`` headers), both ways."""

from __future__ import annotations

from confluent_kafka import Message

from outboxkit.brokers.base import Delivered
from outboxkit.core.envelope import OutboxEvent, cloudevent_attributes


def kafka_headers(event: OutboxEvent, default_source: str) -> list[tuple[str, str | bytes | None]]:
    """Headers of the CloudEvents Kafka binding, binary mode: ``ce_<attribute>`` for every attribute
    but ``datacontenttype``, which is ``content-type``; user headers (``traceparent``...) as given."""
    headers: list[tuple[str, str | bytes | None]] = [(name, value.encode()) for name, value in event.headers.items()]
    if "traceparent" in event.headers:
        # The distributed tracing extension attribute, so CloudEvents SDKs see the trace context too.
        headers.append(("ce_traceparent", event.headers["traceparent"].encode()))
    for name, value in cloudevent_attributes(event, default_source).items():
        headers.append(("content-type" if name == "datacontenttype" else f"ce_{name}", value.encode()))
    return headers


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def delivered_from(msg: Message) -> Delivered:
    """A consumed Kafka message with its CloudEvents attributes decoded."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = {name: _text(value) for name, value in pairs}
    key = msg.key()
    return Delivered(
        event_id=headers.get("ce_id", ""),
        topic=msg.topic() or "",
        key=headers.get("ce_subject") or (_text(key) if key is not None else None),
        payload=msg.value() or b"",
        headers=headers,
    )
