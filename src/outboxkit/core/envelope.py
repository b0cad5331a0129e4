"""The event envelope: ids, topic rules, payload encoding and the CloudEvents attributes.

Everything here is pure: emit() uses it to refuse bad input before writing, the relay uses it to
build the wire headers, and the lab reuses it to read them back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uuid_utils

from outboxkit.errors import EncodingError, InvalidTopicError

#: Default payload limit: NATS' default max_payload is 1 MiB and it counts the headers too,
#: so leave room for them. Configurable on ``Outbox``.
DEFAULT_MAX_PAYLOAD = 1024 * 1024 - 16 * 1024

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"

# A routing name every bus accepts: NATS subject tokens (no wildcards, no empty tokens), AMQP
# routing keys, Kafka topics (legal characters . _ - and alphanumerics), Redis stream names.
_WORD = r"[A-Za-z0-9_\-]+"
_TOPIC = re.compile(rf"{_WORD}(?:\.{_WORD})*")
MAX_TOPIC_LENGTH = 249  # Kafka's limit, the strictest of the buses
_HEADER_NAME = re.compile(r"[A-Za-z0-9_\-.]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Names the wire formats use: ce-* on NATS/HTTP, unprefixed attribute names on MQTT 5 and Redis.
_RESERVED_HEADERS = frozenset(
    {"nats-msg-id", "content-type", "specversion", "id", "source", "type", "time", "subject", "datacontenttype"}
    | {"sequence", "data", "traceparent-ce"}
)

Encoder = Callable[[Any], bytes]


def new_event_id() -> str:
    """A UUIDv7: unique, and sortable by creation time, which keeps the id index compact."""
    return str(uuid_utils.uuid7())


def validate_topic(topic: object) -> str:
    """Return ``topic`` if every bus can route it, else raise :class:`InvalidTopicError`."""
    if not isinstance(topic, str):
        raise InvalidTopicError(f"topic must be a str, got {type(topic).__name__}")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidTopicError(f"topic is {len(topic)} characters long; the limit is {MAX_TOPIC_LENGTH}")
    if not _TOPIC.fullmatch(topic):
        raise InvalidTopicError(
            f"invalid topic {topic!r}: use dot-separated tokens of letters, digits, '_' and '-' "
            "(for example 'orders.created'); wildcards, spaces and empty tokens cannot be routed"
        )
    return topic


def validate_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise EncodingError(f"key must be a non-empty str or None, got {key!r}")
    if len(key.encode()) > 1024:
        raise EncodingError("key is longer than 1024 bytes")
    if _CONTROL.search(key):
        # The key travels as a message header (ce-subject, MQTT user property): a line break there
        # would split the header block on some buses.
        raise EncodingError(f"key {key!r} contains control characters")
    return key


def validate_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """User headers travel as message headers: names must be tokens and values printable str."""
    if not headers:
        return {}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise EncodingError(f"invalid header name {name!r}: use letters, digits, '_', '-', '.'")
        lowered = name.lower()
        if lowered.startswith("ce-") or lowered in _RESERVED_HEADERS:
            raise EncodingError(f"header {name!r} is set by outboxkit; pass type= or key= instead")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise EncodingError(f"header {name!r} must be a str without line breaks")
        out[name] = value
    return out


# One encoder instance: json.dumps with non-default options builds a new JSONEncoder per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_encoder(value: Any) -> bytes:
    """Compact JSON. NaN and infinities are refused: they are not JSON and other languages choke."""
    return _JSON.encode(value).encode()


def encode_payload(
    payload: Any, encoder: Encoder = json_encoder, *, max_bytes: int = DEFAULT_MAX_PAYLOAD
) -> tuple[bytes, str]:
    """Encode ``payload`` to ``(bytes, content_type)``; ``bytes`` pass through untouched."""
    if isinstance(payload, bytes | bytearray | memoryview):
        data, content_type = bytes(payload), OCTET_STREAM
    else:
        try:
            data = encoder(payload)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise EncodingError(f"payload cannot be encoded as JSON: {exc}") from exc
        if not isinstance(data, bytes):
            raise EncodingError(f"the encoder returned {type(data).__name__}, not bytes")
        content_type = JSON
    if len(data) > max_bytes:
        raise EncodingError(
            f"payload is {len(data)} bytes; the limit is {max_bytes} (the broker would refuse it). "
            "Store large data elsewhere and send a reference, or raise Outbox(max_payload=...)"
        )
    return data, content_type


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One committed outbox row, as the relay reads it."""

    seq: int
    id: str
    topic: str
    payload: bytes
    key: str | None = None
    type: str | None = None
    source: str | None = None
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    attempts: int = 0
    #: The lease bucket of the row (stores with leases); the relay stops publishing a bucket whose
    #: lease may have expired by its own clock.
    bucket: int | None = None
    #: Why this row cannot be turned into a message (written by another program: H11). The relay
    #: dead-letters such a row instead of publishing it; ``None`` for every well-formed row.
    defect: str | None = None


#: Headers that are also CloudEvents extension attributes (lowercase alphanumeric names, as the
#: spec requires): the bus bindings put them where each carries attributes. "streamid" and
#: "streamversion" are set by the event store (outboxkit.eventstore) on every event it appends;
#: "tenantid" by the relay fleet for outboxes with ``tenant_attribute = true`` (docs/fleet.md).
EXTENSION_HEADERS = ("operation", "streamid", "streamversion", "tenantid")


def format_time(value: datetime | None) -> str:
    """RFC 3339 in UTC, as CloudEvents' ``time`` wants it."""
    when = value or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cloudevent_attributes(event: OutboxEvent, default_source: str) -> dict[str, str]:
    """The CloudEvents 1.0 context attributes of ``event`` (unprefixed names)."""
    attrs = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source or default_source,
        "type": event.type or event.topic,
        "time": format_time(event.created_at),
        "datacontenttype": event.content_type,
    }
    if event.key is not None:
        attrs["subject"] = event.key
    # CloudEvents "sequence" extension: the outbox seq, zero-padded so that string order is
    # numeric order. Lets a consumer check per-key order (the inbox's order check reads it).
    attrs["sequence"] = f"{event.seq:020d}"
    # Extension attributes carried in headers: "operation" (insert/update/delete) of events that
    # capture triggers write, so consumers see the operation without parsing the body.
    for name in EXTENSION_HEADERS:
        value = event.headers.get(name)
        if value is not None:
            attrs[name] = value
    return attrs


def binary_headers(event: OutboxEvent, default_source: str) -> dict[str, str]:
    """Headers for binary content mode as in the CloudEvents HTTP binding (used by NATS).

    ``datacontenttype`` maps to ``Content-Type`` there; every other attribute gets ``ce-``.
    User headers (``traceparent`` among them) ride along unchanged. Built directly (not from
    :func:`cloudevent_attributes`): this runs once per published event.
    """
    headers = dict(event.headers) if event.headers else {}
    if "traceparent" in headers:
        # The W3C header is what tracing instrumentations read; the CloudEvents distributed
        # tracing extension carries the same value as an attribute, so SDKs see it too.
        headers["ce-traceparent"] = headers["traceparent"]
    headers["ce-specversion"] = "1.0"
    headers["ce-id"] = event.id
    headers["ce-source"] = event.source or default_source
    headers["ce-type"] = event.type or event.topic
    headers["ce-time"] = format_time(event.created_at)
    headers["content-type"] = event.content_type
    if event.key is not None:
        headers["ce-subject"] = event.key
    headers["ce-sequence"] = f"{event.seq:020d}"
    for name in EXTENSION_HEADERS:  # e.g. "operation" of captured changes, also an attribute
        if name in headers:
            headers[f"ce-{name}"] = headers[name]
    return headers
