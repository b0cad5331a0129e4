"""The RabbitMQ publisher: confirms, ``mandatory`` publishes, a channel closed for good detected."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions

from outboxkit.brokers._errors import Outage, timed_out
from outboxkit.brokers.base import Features
from outboxkit.brokers.rabbitmq.client import _Settings, blocked, connect, declare_exchange
from outboxkit.brokers.rabbitmq.errors import translate
from outboxkit.brokers.rabbitmq.wire import amqp_properties
from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import UnavailableError, UnroutableError

log = logging.getLogger("outboxkit.rabbitmq")


class RabbitMQPublisher:
    """Publisher with confirms. Many publishes are in flight on one channel; aiormq sends them in
    call order (its channel lock is FIFO) and the broker confirms them in that order per queue."""

    features = Features(native_dedupe=False, persistent=True, ordered=True)

    def __init__(
        self,
        url: str,
        *,
        source: str = "/outboxkit",
        max_in_flight: int = 4096,
        ack_timeout: float = 5.0,
        reconnect_interval: float = 0.5,
    ) -> None:
        self.settings = _Settings(url)
        self.url = url
        self.source = source
        self.max_in_flight = max_in_flight  # the relay bounds its window; nothing to configure here
        self.ack_timeout = ack_timeout
        self.reconnect_interval = reconnect_interval
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._outage = Outage(log, f"RabbitMQ {self.settings.display}")
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._underlay: aiormq.Channel | None = None
        self._channel_error = ""  # why the broker last closed our channel, for the log line

    async def connect(self) -> None:
        self._conn, self._outage = await connect(
            self.url, name="outboxkit-relay", reconnect_interval=self.reconnect_interval
        )
        try:
            # on_return_raises: a basic.return fails the confirmation with PublishError (H8).
            channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
            await declare_exchange(channel, self.settings.exchange)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError) as exc:
            await self.close()
            raise UnavailableError(f"RabbitMQ at {self.settings.display}: cannot open the channel: {exc!r}") from None
        except BaseException:
            await self.close()
            raise
        assert isinstance(channel, aio_pika.abc.AbstractRobustChannel)
        self._channel = channel

    async def close(self) -> None:
        conn, self._conn, self._channel, self._underlay = self._conn, None, None, None
        self._outage.closing = True
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)

    async def _ready_channel(self) -> aiormq.Channel:
        """The open underlying channel; after an outage or a channel error (an oversized message
        closes the channel) wait until aio-pika has reopened it.

        The robust channel reopens itself within milliseconds of a channel error, declaring the
        exchange again. If it did not within ``ack_timeout`` while the connection is up, its restore
        failed (the exchange was re-created with another type, permissions changed) and aio-pika
        will not try again before the connection drops: the channel is closed for good."""
        underlay = self._underlay
        if underlay is not None and not underlay.is_closed:
            return underlay
        assert self._channel is not None
        try:
            async with asyncio.timeout(self.ack_timeout):
                while True:
                    with contextlib.suppress(aiormq.exceptions.ChannelInvalidStateError):
                        # The concrete aiormq.Channel: its basic_publish takes wait=False.
                        underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
                        if not underlay.is_closed:
                            self._underlay = underlay
                            return underlay
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass
        if not self._outage.is_down:
            # One reopen of our own, to learn why (or to find it works now).
            try:
                await asyncio.wait_for(self._channel.reopen(), self.ack_timeout)
                underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
            except Exception as exc:
                closed_by = self._channel_error or "no reason given"
                why = exc.args[0] if exc.args else repr(exc)
                self._outage.kill(f"the broker closed its channel ({closed_by}) and it cannot be reopened: {why}")
            else:
                self._underlay = underlay
                return underlay
        raise self._outage.unavailable(f"no open RabbitMQ channel within {self.ack_timeout}s")

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        if self._channel is None:
            raise UnavailableError("RabbitMQ publisher is not connected")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[None] = loop.create_future()
        if self._outage.is_down:  # reconnecting in the background, or the channel is dead
            result.set_exception(self._outage.unavailable(f"RabbitMQ cannot publish {event.id}"))
            return result
        try:
            # Awaited here, in call order, so a later publish never overtakes this one (G5).
            channel = await self._ready_channel()
        except UnavailableError as exc:
            result.set_exception(exc)
            return result
        properties = amqp_properties(event, self.source, self.settings.prefixes)
        # wait=False: the frame is queued for the writer in order; the task then only waits for the
        # confirm (or the return, H8), so thousands of publishes overlap on the one channel.
        send = loop.create_task(
            channel.basic_publish(
                event.payload,
                exchange=self.settings.exchange,
                routing_key=event.topic,
                properties=properties,
                mandatory=True,
                wait=False,
            )
        )

        def on_timeout() -> None:
            if not result.done():
                message = f"no confirm for {event.id} within {self.ack_timeout}s"
                if blocked(self._conn):
                    # A resource alarm (memory, disk) stops the broker from reading: an outage of
                    # the broker, which must not burn the event's attempts.
                    result.set_exception(UnavailableError(f"{message}: RabbitMQ blocks publishers (resource alarm)"))
                else:
                    result.set_exception(timed_out(self._outage, message))
            send.cancel()

        timer = loop.call_later(self.ack_timeout, on_timeout)

        def on_done(fut: asyncio.Future[Any]) -> None:
            timer.cancel()
            if result.done():
                if not fut.cancelled():
                    fut.exception()  # retrieved: no "exception was never retrieved" noise
                return
            if fut.cancelled():
                result.set_exception(timed_out(self._outage, f"publish of {event.id} was cancelled"))
                return
            exc = fut.exception()
            if exc is not None:
                if isinstance(exc, aiormq.exceptions.ChannelClosed):
                    self._channel_error = str(exc)
                result.set_exception(translate(exc, event, self._outage))
            elif isinstance(fut.result(), aiormq.spec.Basic.Ack):
                result.set_result(None)
            else:  # a returned message when on_return_raises is off; never counted as delivered
                result.set_exception(UnroutableError(f"no queue is bound for routing key {event.topic!r}"))

        send.add_done_callback(on_done)
        return result
