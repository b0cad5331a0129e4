"""The ``mqtt://`` URL, outbox topics as MQTT topics, and CloudEvents on MQTT 5 (binary) or 3.1.1 (structured)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from outboxkit.brokers.base import Delivered
from outboxkit.core.envelope import JSON, OutboxEvent, cloudevent_attributes
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, PermanentError

STRUCTURED = "application/cloudevents+json"


#: CloudEvents attributes carried as MQTT 5 user properties (datacontenttype is Content Type).
CE_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "subject")


@dataclass(frozen=True, slots=True)
class Settings:
    """What an ``mqtt://`` URL says."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    qos: int = 1
    version: int = 5  # 5 or 311
    max_message_size: int = 0  # client-side limit (0 = only what CONNACK says)
    require_subscriber: bool = True  # MQTT 5 "no matching subscribers" -> UnroutableError
    session_expiry: int = 7 * 24 * 3600  # consumer sessions, seconds
    connect_timeout: float = 5.0


def parse_url(url: str) -> Settings:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigurationError(f"not an MQTT URL: {redact_url(url)!r} (use mqtt://host:1883)")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigurationError(f"bad port in MQTT URL {redact_url(url)!r}") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    known = {"qos", "version", "max_message_size", "require_subscriber", "session_expiry", "connect_timeout"}
    unknown = set(query) - known
    if unknown:
        raise ConfigurationError(f"unknown MQTT URL option(s) {sorted(unknown)}; known: {sorted(known)}")
    try:
        qos = int(query.get("qos", "1"))
        version = {"5": 5, "5.0": 5, "311": 311, "3.1.1": 311}[query.get("version", "5")]
        max_message_size = int(query.get("max_message_size", "0"))
        session_expiry = int(query.get("session_expiry", str(7 * 24 * 3600)))
        connect_timeout = float(query.get("connect_timeout", "5"))
        require = {"true": True, "1": True, "false": False, "0": False}[query.get("require_subscriber", "true")]
    except (KeyError, ValueError) as exc:
        raise ConfigurationError(f"bad option in MQTT URL {redact_url(url)!r}: {exc}") from None
    if qos not in (1, 2):
        raise ConfigurationError("MQTT qos must be 1 or 2: QoS 0 has no confirmation (G3)")
    return Settings(
        host=parts.hostname or "127.0.0.1",
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
        qos=qos,
        version=version,
        max_message_size=max_message_size,
        require_subscriber=require,
        session_expiry=session_expiry,
        connect_timeout=connect_timeout,
    )


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def mqtt_topic(topic: str) -> str:
    """``orders.created`` -> ``orders/created``; for subscriptions NATS-style ``*``/``>`` become
    MQTT's ``+``/``#``."""
    return "/".join("+" if t == "*" else "#" if t == ">" else t for t in topic.split("."))


def outbox_topic(topic: str) -> str:
    """The reverse of :func:`mqtt_topic`: ``orders/created`` -> ``orders.created``."""
    return topic.replace("/", ".")


def encode(event: OutboxEvent, source: str, version: int) -> tuple[bytes, Properties | None]:
    """``(payload, properties)`` of ``event``: binary mode on MQTT 5, structured on 3.1.1."""
    attrs = cloudevent_attributes(event, source)
    clash = set(event.headers) & set(CE_ATTRIBUTES)
    if clash:
        raise PermanentError(f"header(s) {sorted(clash)} would overwrite CloudEvents attributes on MQTT")
    if version == 311:
        return structured(event, attrs), None
    props = _properties(PacketTypes.PUBLISH)
    props.ContentType = attrs.pop("datacontenttype")
    # Attributes first, then user headers (traceparent included: it is also the CloudEvents
    # distributed-tracing extension attribute of the same name, so SDKs read it either way).
    # (An extension attribute such as "operation" is also a user header: sent once, as attribute.)
    props.UserProperty = [*attrs.items(), *((k, v) for k, v in event.headers.items() if k not in attrs)]
    return event.payload, props


def structured(event: OutboxEvent, attrs: Mapping[str, str]) -> bytes:
    """A JSON CloudEvent: ``data`` holds a JSON payload as it is, other payloads go to ``data_base64``."""
    doc: dict[str, Any] = {**event.headers, **attrs}
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)[:-1]
    data = _json_data(event.payload, event.content_type)
    if data is not None:
        return f'{body},"data":'.encode() + data + b"}"
    return f'{body},"data_base64":"{base64.b64encode(event.payload).decode()}"}}'.encode()


def _json_data(payload: bytes, content_type: str) -> bytes | None:
    if not (content_type == JSON or content_type.endswith("+json")):
        return None
    try:
        json.loads(payload)
    except ValueError:
        return None
    return payload


def decode(topic: str, payload: bytes, properties: Properties | None) -> Delivered:
    """A received message with its CloudEvents attributes decoded (binary or structured mode)."""
    user = dict(getattr(properties, "UserProperty", None) or [])
    content_type = getattr(properties, "ContentType", None)
    if "id" in user and content_type != STRUCTURED:
        headers = dict(user)
        if content_type:
            headers["content-type"] = content_type
        return Delivered(user["id"], outbox_topic(topic), user.get("subject"), payload, headers)
    try:
        doc = json.loads(payload)
        event_id = doc["id"]
        # A structured CloudEvent names its spec version and has a string id; any other JSON with
        # an "id" (an order, a null) is somebody's payload, not an event id.
        if "specversion" not in doc or not isinstance(event_id, str):
            raise KeyError("id")
    except (ValueError, TypeError, KeyError):
        # Not a CloudEvent (published by something else): hand it over as it is, without an id
        # (the inbox parks it: it cannot tell it from other messages).
        return Delivered("", outbox_topic(topic), None, payload, {str(k): str(v) for k, v in user.items()})
    if "data_base64" in doc:
        try:
            data = base64.b64decode(doc.pop("data_base64"))
        except (binascii.Error, TypeError):
            data = b""
    else:
        # Re-encoded compactly: the bytes outboxkit's JSON encoder wrote, the same value otherwise.
        data = json.dumps(doc.pop("data", None), separators=(",", ":"), ensure_ascii=False).encode()
    headers = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}
    if "datacontenttype" in headers:
        headers["content-type"] = headers["datacontenttype"]
    return Delivered(str(event_id), outbox_topic(topic), headers.get("subject"), data, headers)


def packet_size(topic: str, payload: bytes, props: Properties | None, qos: int) -> int:
    """Size of the PUBLISH packet, to compare with the broker's maximum packet size."""
    rest = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    if props is not None:
        rest += len(props.pack())  # type: ignore[no-untyped-call]
    header = 1
    n = rest
    while True:
        header += 1
        n //= 128
        if n == 0:
            return header + rest
