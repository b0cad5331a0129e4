"""MQTT (5 by default, 3.1.1 as an option): publish with PUBACK/PUBCOMP, CloudEvents MQTT binding.

``mqtt://[user:pass@]host:1883?qos=1&version=5`` (``mqtts://`` for TLS). The outbox topic
``orders.created`` is the MQTT topic ``orders/created``. MQTT 5 carries the CloudEvents attributes
as unprefixed user properties and ``datacontenttype`` as the Content Type property (binary mode);
MQTT 3.1.1 has no headers, so the message is a structured-mode JSON CloudEvent. MQTT has no dedupe
id: ``features.native_dedupe`` is False and subscribers de-duplicate on the ``id`` (the inbox does).

The connection is aiomqtt's (paho-mqtt underneath). aiomqtt hides what an outbox needs, so a small
subclass hooks four paho callbacks: PUBACK reason codes (MQTT 5 reports "no matching subscribers"
and refusals there), CONNACK properties (the broker's maximum packet size), raw incoming messages
(the DUP flag) and paho's manual acknowledgement. aiomqtt does not reconnect; :class:`_Link` does.
Durability (H7): Mosquitto keeps messages in memory and writes them to disk only at shutdown or
every ``autosave_interval`` (30 min): see docs/buses/mqtt.md for the safe settings.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from outboxkit.brokers._errors import Outage, consumer_errors, timed_out, unexpected
from outboxkit.brokers.base import Delivered, Features, Incoming
from outboxkit.core.envelope import JSON, OutboxEvent, cloudevent_attributes
from outboxkit.core.urls import redact_url
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    TransientError,
    UnavailableError,
    UnroutableError,
)

log = logging.getLogger("outboxkit.mqtt")

STRUCTURED = "application/cloudevents+json"
#: CloudEvents attributes carried as MQTT 5 user properties (datacontenttype is Content Type).
CE_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "subject")
_NO_SUBSCRIBERS = 0x10
_MAX_BACKOFF = 5.0

# -- error translation (H12; every row is in docs/exceptions.md and tests/unit) ---------------------

#: MQTT 5 PUBACK/PUBREC reason codes >= 0x80 (and 0x10) -> class; an unlisted failure code is a
#: counted TransientError. 0x95 is not a legal PUBACK code, but a broker that sends it means it.
PUBACK_CODES: dict[int, type[DeliveryError]] = {
    0x10: UnroutableError,  # no matching subscribers: the broker dropped it (with require_subscriber)
    0x80: TransientError,  # unspecified error
    0x83: PermanentError,  # implementation specific error: the broker will not take this message
    0x87: UnroutableError,  # not authorized: an ACL denies this topic (fixed by granting it)
    0x90: PermanentError,  # topic name invalid
    0x91: TransientError,  # packet identifier in use
    0x95: PermanentError,  # packet too large
    0x97: TransientError,  # quota exceeded
    0x99: PermanentError,  # payload format invalid
}

#: paho's return code of ``publish()`` (the message was not queued) -> class.
PAHO_CODES: dict[int, type[DeliveryError]] = {
    paho.MQTT_ERR_NO_CONN: UnavailableError,
    paho.MQTT_ERR_CONN_LOST: UnavailableError,
    paho.MQTT_ERR_KEEPALIVE: UnavailableError,
    paho.MQTT_ERR_PAYLOAD_SIZE: PermanentError,
    paho.MQTT_ERR_QUEUE_SIZE: TransientError,
    paho.MQTT_ERR_NOMEM: TransientError,
}


def puback_error(code: int, event_id: str, reason: object) -> DeliveryError:
    """The outboxkit error of a refused PUBACK (``code`` >= 0x80, or 0x10 when a subscriber is required)."""
    kind = PUBACK_CODES.get(code, TransientError)
    if kind is UnroutableError and code == _NO_SUBSCRIBERS:
        return UnroutableError(f"no MQTT subscription matches the topic of {event_id}: the broker dropped it")
    if kind is UnroutableError:
        return UnroutableError(f"MQTT broker refused {event_id} for its topic: {reason} (0x{code:02X})")
    return kind(f"MQTT broker refused {event_id}: {reason} (0x{code:02X})")


def paho_error(rc: int, event_id: str) -> DeliveryError:
    """The outboxkit error of a ``publish()`` paho did not queue (its return code)."""
    kind = PAHO_CODES.get(rc, TransientError)
    return kind(f"MQTT publish of {event_id} failed: {paho.error_string(rc)}")


def client_error(exc: BaseException, what: str) -> DeliveryError:
    """An exception of paho/aiomqtt as an outboxkit error: a refused or lost connection (MqttError,
    MqttCodeError with a CONNACK/DISCONNECT reason code, a socket error, a timeout) is an outage;
    paho's ValueError (invalid topic, QoS, payload over 256 MB) refuses the message for good."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiomqtt.MqttError | OSError | TimeoutError):
        return UnavailableError(f"{what}: {exc or type(exc).__name__}")
    if isinstance(exc, ValueError):
        return PermanentError(f"{what}: MQTT refused the message: {exc}")
    return unexpected(exc, what)


# -- URL and topics ------------------------------------------------------------------------------


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


# -- wire format ---------------------------------------------------------------------------------


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
    props.UserProperty = [*attrs.items(), *event.headers.items()]
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
    except (ValueError, TypeError, KeyError):
        # Not a CloudEvent (published by something else): hand it over as it is.
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


# -- connection ----------------------------------------------------------------------------------


class _Client(aiomqtt.Client):
    """aiomqtt's client with the paho callbacks it swallows passed on to us."""

    def __init__(
        self,
        settings: Settings,
        *,
        identifier: str | None,
        persistent: bool,
        on_publish: Callable[[int, ReasonCode], None] | None = None,
        on_message: Callable[[paho.MQTTMessage], None] | None = None,
    ) -> None:
        v5 = settings.version == 5
        props: Properties | None = None
        if v5:
            props = _properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = settings.session_expiry if persistent else 0
            if persistent:
                props.ReceiveMaximum = 65535  # the broker's max_inflight_messages still applies
        super().__init__(
            settings.host,
            settings.port,
            username=settings.username,
            password=settings.password,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else not persistent,
            clean_start=not persistent if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
            timeout=settings.connect_timeout,
            keepalive=15,
            # paho's own window (20 by default); narrowed to the broker's Receive Maximum on CONNACK.
            max_inflight_messages=65535,
            tls_context=ssl.create_default_context() if settings.tls else None,
        )
        self.max_packet_size = 0
        self._hook_publish = on_publish
        self._hook_message = on_message
        if on_message is not None:
            self._client.manual_ack_set(True)

    @property
    def raw(self) -> paho.Client:
        return self._client

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.max_packet_size = int(getattr(properties, "MaximumPacketSize", 0) or 0)
        # paho ignores the broker's Receive Maximum (Mosquitto: max_inflight_messages, 20 by
        # default) and would overrun it; past the window paho queues and sends in order as PUBACKs
        # free slots. The public setter refuses once connected, and this runs before any publish.
        receive_max = int(getattr(properties, "ReceiveMaximum", 0) or 65535)
        client._max_inflight_messages = receive_max
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        if self._hook_publish is not None:
            self._hook_publish(mid, reason_code)
        else:
            super()._on_publish(client, userdata, mid, reason_code, properties)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._hook_message is not None:
            self._hook_message(message)
        else:
            super()._on_message(client, userdata, message)

    async def wait_closed(self) -> None:
        """Return when the connection is gone (aiomqtt's message iterator raises then)."""
        with contextlib.suppress(aiomqtt.MqttError):
            async for _ in self.messages:
                pass


class _Link:
    """One live connection, replaced after an outage: one log line when it drops, one when back.

    aiomqtt does not reconnect by itself; this does, in the background. While it is down,
    ``outage.is_down`` holds and publishes fail with ``UnavailableError`` (not counted).

    ``make`` builds a fresh client (a fresh paho state, so nothing half-sent is replayed behind our
    back); ``on_up`` runs on every (re)connect before the link counts as up; ``on_down`` fails what
    depended on the lost connection."""

    def __init__(
        self,
        url: str,
        settings: Settings,
        make: Callable[[], _Client],
        on_up: Callable[[_Client], Awaitable[None]],
        on_down: Callable[[], None],
    ) -> None:
        self.what = f"MQTT {redact_url(url)}"
        self.settings = settings
        self.make = make
        self.on_up = on_up
        self.on_down = on_down
        self.client: _Client | None = None
        self.outage = Outage(log, self.what)
        self._task: asyncio.Task[None] | None = None

    async def _open(self) -> _Client:
        client = self.make()
        try:
            await asyncio.wait_for(client.__aenter__(), self.settings.connect_timeout + 1)
        except Exception as exc:
            with contextlib.suppress(Exception):
                client.raw.disconnect()
            error = client_error(exc, f"{self.what} is unavailable")
            raise UnavailableError(str(error)) from None
        try:
            await self.on_up(client)
        except BaseException as exc:
            await _quit(client)
            if isinstance(exc, Exception) and not isinstance(exc, DeliveryError):
                raise client_error(exc, f"{self.what}: set-up after connect failed") from exc
            raise
        return client

    async def start(self) -> None:
        self.client = await self._open()
        self._task = asyncio.create_task(self._supervise(), name=f"outboxkit-mqtt-link {self.what}")
        self._task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        # The supervisor never ends before close(); if it did, nothing would reconnect this link.
        if not self.outage.closing:
            failure = None if task.cancelled() else task.exception()
            self.outage.kill(f"its reconnect task stopped ({failure!r})")

    @property
    def dead(self) -> bool:
        return self.outage.dead is not None

    async def _supervise(self) -> None:
        while not self.outage.closing:
            client = self.client
            assert client is not None
            await client.wait_closed()
            if self.outage.closing:
                return
            self.client = None
            self.outage.down()
            self.on_down()
            delay = 0.1
            while not self.outage.closing:
                await asyncio.sleep(delay)
                try:
                    self.client = await self._open()
                except Exception as exc:  # whatever it is, the next attempt may work: keep trying
                    log.debug("%s reconnect failed: %s", self.what, exc)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                self.outage.up()
                break

    async def close(self) -> None:
        self.outage.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.client is not None:
            await _quit(self.client)
            self.client = None


async def _quit(client: _Client) -> None:
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError, RuntimeError):
        await asyncio.wait_for(client.__aexit__(None, None, None), 5)


# -- publisher -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[None]
    event_id: str
    deadline: float


class MqttPublisher:
    """Publishes with QoS 1 (PUBACK) or 2 (PUBCOMP) on one connection, many messages in flight.

    Messages are handed to paho in call order and paho writes them in that order; the futures
    resolve as the acknowledgements arrive."""

    features = Features(native_dedupe=False, persistent=True, ordered=True)

    def __init__(
        self,
        url: str,
        *,
        source: str = "/outboxkit",
        max_in_flight: int = 4096,
        ack_timeout: float = 5.0,
        client_id: str | None = None,
    ) -> None:
        self.settings = parse_url(url)
        self.url = url
        self.source = source
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout
        self.client_id = client_id or f"outboxkit-pub-{secrets.token_hex(6)}"
        # mid -> pending, in send order: deadlines are increasing, so the sweeper reads the front only.
        self._pending: dict[int, _Pending] = {}
        self._link: _Link | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        link = _Link(self.url, self.settings, self._make, self._up, self._down)
        await link.start()
        self._link = link
        self._sweeper = asyncio.create_task(self._sweep())

    def _make(self) -> _Client:
        return _Client(self.settings, identifier=self.client_id, persistent=False, on_publish=self._on_ack)

    async def _up(self, client: _Client) -> None:
        return None

    def _down(self) -> None:
        self._fail_all("MQTT connection lost before the broker confirmed")

    def _fail_all(self, why: str) -> None:
        # A lost connection (or our own close) is not the events' fault: not counted.
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(UnavailableError(f"{why} {p.event_id}"))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._link is not None:
            await self._link.close()
            self._link = None
        self._fail_all("publisher closed before the broker confirmed")

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[None] = loop.create_future()
        if self._link is None:
            raise UnavailableError("MQTT publisher is not connected")
        client = self._link.client
        if client is None or self._link.dead:
            result.set_exception(self._link.outage.unavailable(f"MQTT cannot publish {event.id}"))
            return result
        try:
            self._send(client, event, result, loop.time())
        except Exception as exc:
            result.set_exception(client_error(exc, f"MQTT publish of {event.id}"))
        return result

    def _send(self, client: _Client, event: OutboxEvent, result: asyncio.Future[None], now: float) -> None:
        topic = mqtt_topic(event.topic)
        payload, props = encode(event, self.source, self.settings.version)
        limits = [n for n in (client.max_packet_size, self.settings.max_message_size) if n]
        if limits:
            size = packet_size(topic, payload, props, self.settings.qos)
            if size > min(limits):
                raise PermanentError(
                    f"MQTT message of {size} bytes exceeds the broker's maximum packet size of {min(limits)} bytes"
                )
        info = client.raw.publish(topic, payload, self.settings.qos, False, props)  # ValueError: client_error
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise paho_error(info.rc, event.id)
        self._pending[info.mid] = _Pending(result, event.id, now + self.ack_timeout)

    def _on_ack(self, mid: int, reason: ReasonCode) -> None:
        pending = self._pending.pop(mid, None)
        if pending is None or pending.future.done():
            return  # timed out earlier: the relay already counts it as failed
        code = int(reason.value)
        if code < 0x80 and not (code == _NO_SUBSCRIBERS and self.settings.require_subscriber):
            pending.future.set_result(None)
        else:
            pending.future.set_exception(puback_error(code, pending.event_id, reason))

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(0.5, self.ack_timeout / 4))
            now = loop.time()
            expired = []
            for mid, p in self._pending.items():
                if p.deadline > now:
                    break
                expired.append(mid)
            for mid in expired:
                p = self._pending.pop(mid)
                if not p.future.done():
                    outage = self._link.outage if self._link is not None else None
                    message = f"no MQTT PUBACK for {p.event_id} within {self.ack_timeout}s"
                    p.future.set_exception(timed_out(outage, message) if outage else TransientError(message))


# -- consumer ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Handle:
    generation: int  # which connection delivered it: a PUBACK only means something on that one
    mid: int
    qos: int


class MqttConsumer:
    """A persistent MQTT session named after ``group``, subscribed (QoS 1) to ``topics``.

    Messages are acknowledged (PUBACK) only by :meth:`ack`, through paho's manual acknowledgement;
    an unacknowledged message is sent again by the broker when the session reconnects, with DUP set.
    :meth:`retry` cannot requeue one message on the broker (MQTT has no such operation): it keeps
    the message unacknowledged and hands it out again after ``delay``, with ``attempt`` + 1. If the
    consumer stops first, the broker redelivers it on the next connection."""

    features = MqttPublisher.features

    def __init__(self, url: str, *, group: str, topics: Sequence[str], qos: int = 1) -> None:
        if not group:
            raise ConfigurationError("an MQTT consumer needs a group (it names the persistent session)")
        self.settings = parse_url(url)
        self.url = url
        self.group = group
        self.topics = list(topics)
        self.qos = qos
        self.client_id = session_id(group)
        self._ready: asyncio.Queue[Incoming] = asyncio.Queue()
        self._generation = 0
        self._timers: set[asyncio.TimerHandle] = set()
        self._link: _Link | None = None

    async def connect(self) -> None:
        link = _Link(self.url, self.settings, self._make, self._up, self._down)
        await link.start()
        self._link = link

    def _make(self) -> _Client:
        # A new generation before CONNACK: a resumed session's messages arrive right after it.
        self._generation += 1
        return _Client(self.settings, identifier=self.client_id, persistent=True, on_message=self._on_message)

    async def _up(self, client: _Client) -> None:
        # Subscribing again is idempotent; it also recreates the subscription if the session expired.
        granted = await client.subscribe([(mqtt_topic(t), self.qos) for t in self.topics])
        refused = [t for t, g in zip(self.topics, granted, strict=False) if _code(g) >= 0x80]
        if refused:
            raise PermanentError(f"MQTT broker refused the subscription to {refused}: {granted}")

    def _down(self) -> None:
        # What the lost connection delivered comes back on the next one (DUP set).
        self._generation += 1
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _on_message(self, msg: paho.MQTTMessage) -> None:
        delivered = decode(msg.topic, bytes(msg.payload), getattr(msg, "properties", None))
        handle = _Handle(self._generation, msg.mid, msg.qos)
        self._ready.put_nowait(Incoming(delivered, attempt=2 if msg.dup else 1, handle=handle))

    async def close(self) -> None:
        self._down()
        if self._link is not None:
            await self._link.close()
            self._link = None

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        if self._link is None:
            raise UnavailableError("MQTT consumer is not connected")
        if self._link.dead:
            raise self._link.outage.unavailable("MQTT consumer cannot receive")
        with consumer_errors(_consumer_error):
            return await self._receive(max_messages, timeout)

    async def _receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        out: list[Incoming] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not out:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return out
            try:
                first = await asyncio.wait_for(self._ready.get(), left)
            except TimeoutError:
                return out
            if self._current(first):
                out.append(first)
        while len(out) < max_messages and not self._ready.empty():
            item = self._ready.get_nowait()
            if self._current(item):
                out.append(item)
        return out

    def _current(self, incoming: Incoming) -> bool:
        handle: _Handle = incoming.handle
        return handle.generation == self._generation

    async def ack(self, incoming: Incoming) -> None:
        handle: _Handle = incoming.handle
        client = self._link.client if self._link is not None else None
        if client is None or handle.generation != self._generation:
            # The connection that delivered it is gone; the broker sends it again and the inbox
            # drops the duplicate by its id.
            return
        with consumer_errors(_consumer_error):
            # A failed PUBACK (NO_CONN) needs nothing: the broker sends the message again.
            client.raw.ack(handle.mid, handle.qos)

    async def retry(self, incoming: Incoming, delay: float) -> None:
        again = Incoming(incoming.message, attempt=incoming.attempt + 1, handle=incoming.handle)

        def requeue() -> None:
            self._timers.discard(timer)
            if self._current(again):
                self._ready.put_nowait(again)

        timer = asyncio.get_running_loop().call_later(max(delay, 0.0), requeue)
        self._timers.add(timer)


def _consumer_error(exc: Exception) -> DeliveryError:
    return client_error(exc, "MQTT consumer")


def _code(granted: object) -> int:
    """A SUBACK entry: a ReasonCode on MQTT 5, the granted QoS (0x80 = failure) on 3.1.1."""
    value = granted.value if isinstance(granted, ReasonCode) else granted
    return value if isinstance(value, int) else 0x80


def session_id(group: str) -> str:
    """The MQTT client id of a consumer group: the broker keeps the session under this name."""
    return f"outboxkit-{group}"


async def drop_session(url: str, group: str) -> None:
    """Delete the persistent session of ``group`` (its subscriptions and queued messages)."""
    settings = parse_url(url)
    # A clean start (MQTT 5: with a session expiry of 0; 3.1.1: clean session) discards the session.
    client = _Client(settings, identifier=session_id(group), persistent=False)
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as exc:
        raise UnavailableError(f"MQTT {redact_url(url)} is unavailable: {exc}") from None
    await _quit(client)


__all__ = [
    "MqttConsumer",
    "MqttPublisher",
    "Settings",
    "decode",
    "drop_session",
    "encode",
    "mqtt_topic",
    "outbox_topic",
    "parse_url",
    "session_id",
]
