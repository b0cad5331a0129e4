"""The MQTT publisher: QoS 1 (PUBACK) or 2 (PUBCOMP), many messages in flight on one connection."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from outboxkit.brokers._errors import timed_out
from outboxkit.brokers.base import Features
from outboxkit.brokers.mqtt.errors import _NO_SUBSCRIBERS, client_error, paho_error, puback_error
from outboxkit.brokers.mqtt.link import _Client, _Link
from outboxkit.brokers.mqtt.wire import encode, mqtt_topic, packet_size, parse_url
from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import PermanentError, TransientError, UnavailableError


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
