"""The MQTT consumer: a persistent session per group, acknowledged only on ack."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from outboxkit.brokers._errors import consumer_errors
from outboxkit.brokers.base import Incoming
from outboxkit.brokers.mqtt.errors import _consumer_error
from outboxkit.brokers.mqtt.link import _Client, _Link, session_id
from outboxkit.brokers.mqtt.publisher import MqttPublisher
from outboxkit.brokers.mqtt.wire import decode, mqtt_topic, parse_url
from outboxkit.errors import ConfigurationError, PermanentError, UnavailableError

#: A topic nobody subscribes to: unsubscribing from it is a harmless round trip (see close).
_SYNC_TOPIC = "outboxkit/sync"


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
        self._acked = False  # a PUBACK was sent since the last round trip (see close)

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
        if self._acked and self._link is not None and self._link.client is not None:
            # MQTT acknowledges neither a PUBACK nor a DISCONNECT, and a broker that reads the
            # next connection of this session first (a consumer restarted at once) drops the old
            # one unread: acked messages come again. One round trip on this connection first:
            # the broker answers in order, so once the UNSUBACK is back every PUBACK before it
            # was processed. (Seen on a loaded machine: "already connected, closing old connection".)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._link.client.unsubscribe(_SYNC_TOPIC), 5)
            self._acked = False
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
            self._acked = True

    async def retry(self, incoming: Incoming, delay: float) -> None:
        again = Incoming(incoming.message, attempt=incoming.attempt + 1, handle=incoming.handle)

        def requeue() -> None:
            self._timers.discard(timer)
            if self._current(again):
                self._ready.put_nowait(again)

        timer = asyncio.get_running_loop().call_later(max(delay, 0.0), requeue)
        self._timers.add(timer)


def _code(granted: object) -> int:
    """A SUBACK entry: a ReasonCode on MQTT 5, the granted QoS (0x80 = failure) on 3.1.1."""
    value = granted.value if isinstance(granted, ReasonCode) else granted
    return value if isinstance(value, int) else 0x80
