"""The RabbitMQ consumer: a durable quorum queue per group, manual acks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions

from outboxkit.brokers._errors import Outage, consumer_errors
from outboxkit.brokers.base import Incoming
from outboxkit.brokers.rabbitmq.client import _Settings, connect, declare_exchange
from outboxkit.brokers.rabbitmq.errors import _consumer_error
from outboxkit.brokers.rabbitmq.publisher import RabbitMQPublisher
from outboxkit.brokers.rabbitmq.wire import attempt_of, delivered_from
from outboxkit.errors import ConfigurationError, UnavailableError

log = logging.getLogger("outboxkit.rabbitmq")

#: how long a closed channel may stay closed, with the connection up, before it counts as dead
_REOPEN_GRACE = 5.0


class RabbitMQConsumer:
    """A durable quorum queue named ``group``, bound to the exchange with ``topics`` as binding keys
    (AMQP topic patterns: ``orders.*``, ``orders.#``).

    ``retry(delay)`` keeps the message unacked, in this consumer's memory, and hands it out again
    after ``delay`` seconds with ``attempt`` one higher. It is never nacked with requeue: a quorum
    queue counts every requeue against its delivery limit (``x-delivery-limit``, 20 by default on
    RabbitMQ 4) and then drops the message (or dead-letters it to the queue's DLX) unprocessed —
    a message held behind a failing one of its key would spend that budget without ever failing.
    A waiting message holds one prefetch slot (bounded by ``prefetch``, so memory is bounded too);
    after a crash it comes back at once (at-least-once, the inbox de-duplicates). It must be settled
    within the broker's ``consumer_timeout`` (30 minutes by default): keep the inbox's retry budget
    (``max_attempts`` times its backoff cap) well below it.
    """

    features = RabbitMQPublisher.features

    def __init__(self, url: str, *, group: str, topics: Sequence[str], prefetch: int | None = None) -> None:
        self.settings = _Settings(url)
        if not group:
            raise ConfigurationError("a RabbitMQ consumer needs a group (the queue name)")
        if not topics:
            raise ConfigurationError("a RabbitMQ consumer needs at least one topic (binding key)")
        self.url = url
        self.group = group
        self.topics = list(topics)
        self.prefetch = prefetch or self.settings.prefetch
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._outage = Outage(log, f"RabbitMQ consumer {self.settings.display}")
        self._inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        self._later: set[asyncio.TimerHandle] = set()
        # Local redeliveries per message in hand (at most ``prefetch`` entries: unacked messages).
        self._retried: dict[aio_pika.abc.AbstractIncomingMessage, int] = {}
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._closed_since: float | None = None  # when we first saw our channel closed, connection up

    async def connect(self) -> None:
        self._conn, self._outage = await connect(self.url, name=f"outboxkit-consumer-{self.group}")
        try:
            with consumer_errors(_consumer_error):
                await self._subscribe(self._conn)
        except BaseException:
            await self.close()
            raise

    async def _subscribe(self, conn: aio_pika.abc.AbstractRobustConnection) -> None:
        channel = self._channel = await conn.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await declare_exchange(channel, self.settings.exchange)
        try:
            # Quorum: replicated and fsynced before the confirm, and it counts deliveries (H7).
            queue = await channel.declare_queue(self.group, durable=True, arguments={"x-queue-type": "quorum"})
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(f"queue {self.group!r} exists with other settings (want quorum): {exc}") from None
        for topic in self.topics:
            await queue.bind(exchange, routing_key=topic)
        await queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)  # unbounded, but prefetch bounds what is unacked

    async def close(self) -> None:
        for handle in self._later:
            handle.cancel()
        self._later.clear()
        self._retried.clear()
        conn, self._conn = self._conn, None
        self._outage.closing = True
        if conn is not None and not conn.is_closed:
            # Unacked messages go back to the queue when the channel closes.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
        self._inbox = asyncio.Queue()

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        self._check_channel()
        with consumer_errors(_consumer_error):
            return await self._receive(max_messages, timeout)

    def _check_channel(self) -> None:
        """A channel the broker closed (the queue was deleted, a permission changed) is reopened by
        the robust channel at once; if it is still closed after a while with the connection up, its
        restore failed and nothing will be delivered again: the runner must build a new consumer."""
        channel = self._channel
        if channel is None:
            raise UnavailableError("RabbitMQ consumer is not connected")
        if not channel.is_closed or self._outage.is_down:
            self._closed_since = None
            return
        now = asyncio.get_running_loop().time()
        if self._closed_since is None:
            self._closed_since = now
        elif now - self._closed_since > _REOPEN_GRACE:
            self._outage.kill("the broker closed its channel and aio-pika did not reopen it")
            raise self._outage.unavailable("RabbitMQ consumer cannot receive")

    async def _receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        out: list[Incoming] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < max_messages:
            if out or self._inbox.qsize():
                try:
                    message = self._inbox.get_nowait()
                except asyncio.QueueEmpty:
                    break
            else:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    message = await asyncio.wait_for(self._inbox.get(), left)
                except TimeoutError:
                    break
            try:
                message.channel  # noqa: B018 - raises when the channel it came on is closed
            except aiormq.exceptions.ChannelInvalidStateError:
                self._retried.pop(message, None)
                continue  # that channel died: the broker redelivers the message on the new one
            attempt = attempt_of(message) + self._retried.get(message, 0)
            out.append(Incoming(message=delivered_from(message), attempt=attempt, handle=message))
        return out

    async def ack(self, incoming: Incoming) -> None:
        message: aio_pika.abc.AbstractIncomingMessage = incoming.handle
        self._retried.pop(message, None)
        with consumer_errors(_consumer_error):
            try:
                await message.ack()
            except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError) as exc:
                # The channel it came on is gone, so the broker already put it back: it will be
                # delivered again and the inbox drops it as a duplicate (at-least-once).
                log.info("ack of %s not possible (%s); it will be redelivered", incoming.message.event_id, exc)

    async def retry(self, incoming: Incoming, delay: float) -> None:
        message: aio_pika.abc.AbstractIncomingMessage = incoming.handle
        loop = asyncio.get_running_loop()
        inbox = self._inbox  # a close() in between starts a new one: the message is not ours then

        def again(handle: list[asyncio.TimerHandle]) -> None:
            self._later.discard(handle[0])
            self._retried[message] = self._retried.get(message, 0) + 1
            inbox.put_nowait(message)

        box: list[asyncio.TimerHandle] = []
        box.append(loop.call_later(max(0.0, delay), again, box))
        self._later.add(box[0])
