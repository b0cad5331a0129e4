"""The aiomqtt client with the paho callbacks an outbox needs, and the link that reconnects it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from outboxkit.brokers._errors import Outage
from outboxkit.brokers.mqtt.errors import client_error
from outboxkit.brokers.mqtt.wire import Settings, _properties, parse_url
from outboxkit.core.urls import redact_url
from outboxkit.errors import DeliveryError, UnavailableError

log = logging.getLogger("outboxkit.mqtt")

_MAX_BACKOFF = 5.0


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
