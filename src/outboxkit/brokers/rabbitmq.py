"""RabbitMQ (AMQP 0-9-1) through aio-pika: publisher confirms, ``mandatory`` publishes, quorum queues.

* Publisher: one robust connection, one confirm-mode channel, persistent messages to a durable topic
  exchange (``?exchange=NAME``, default ``outboxkit``) with the topic as routing key. Every publish is
  ``mandatory``: a message no queue takes comes back as ``basic.return`` and fails with
  ``UnroutableError`` instead of being confirmed into the void (H8). ``message_id`` = event id (G4;
  RabbitMQ itself does not de-duplicate, consumers do with the inbox).
* Wire format: CloudEvents binary mode per the CloudEvents AMQP binding: attributes as
  ``cloudEvents:<name>`` headers (AMQP 1.0 application properties once RabbitMQ translates them),
  ``datacontenttype`` as the ``content_type`` property; by default also as ``ce-<name>`` headers, which
  is what the SDK's RabbitMQ (knative) binding reads.
* Consumer: a durable quorum queue named after the group, bound with each topic as binding key,
  manual acks, ``attempt`` from the quorum queue's ``x-delivery-count``.

Durability (H7): a confirm for a persistent message routed to a durable (quorum or classic) queue is
sent after the broker wrote it to disk; a transient queue or a non-durable exchange loses it on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import weakref
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions
from pamqp.common import FieldValue

from outboxkit.brokers.base import Delivered, Features, Incoming
from outboxkit.core.envelope import OutboxEvent, cloudevent_attributes
from outboxkit.core.urls import redact_url
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    TransientError,
    UnavailableError,
    UnroutableError,
)

log = logging.getLogger("outboxkit.rabbitmq")

DEFAULT_EXCHANGE = "outboxkit"
#: the CloudEvents AMQP binding's prefix (the SDK's ``bindings.amqp`` reads it and ``cloudEvents_``)
CE_AMQP_PREFIX = "cloudEvents:"
#: the CloudEvents RabbitMQ binding's prefix (the SDK's ``bindings.rabbitmq``)
CE_RABBITMQ_PREFIX = "ce-"
PERSISTENT = 2  # AMQP delivery_mode

# Our own URL options; the rest of the query string (heartbeat, ...) goes to aio-pika untouched.
_OPTIONS = {"exchange", "cloudevents", "prefetch"}
_BINDINGS = {"amqp": (CE_AMQP_PREFIX,), "both": (CE_AMQP_PREFIX, CE_RABBITMQ_PREFIX)}
# RabbitMQ closes the channel with: PRECONDITION_FAILED - message size 2000000 is larger than
# configured max size 1048576
_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")


class _Settings:
    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port or 5672
        except ValueError:
            raise ConfigurationError(f"bad AMQP URL {redact_url(url)!r}") from None
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigurationError(f"not an AMQP URL: {redact_url(url)!r} (use amqp://user:pass@host:5672/vhost)")
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in _OPTIONS}
        self.host = parts.hostname or "127.0.0.1"
        self.port = port
        self.exchange = ours.get("exchange") or DEFAULT_EXCHANGE
        binding = ours.get("cloudevents", "both")
        if binding not in _BINDINGS:
            raise ConfigurationError(f"cloudevents={binding!r} in {redact_url(url)!r}: use 'amqp' or 'both'")
        self.prefixes = _BINDINGS[binding]
        try:
            self.prefetch = int(ours.get("prefetch", "256"))
        except ValueError:
            raise ConfigurationError(f"prefetch must be an integer in {redact_url(url)!r}") from None
        rest = [(k, v) for k, v in query if k not in _OPTIONS]
        self.client_url = urlunsplit(parts._replace(query=urlencode(rest)))
        self.display = redact_url(url)


async def probe(host: str, port: int, display: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when nothing listens: the AMQP handshake errors are less clear."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise UnavailableError(f"RabbitMQ at {display} is unavailable: {exc or 'timed out'}") from None
    writer.close()


# -- one log line per outage -------------------------------------------------------------------------

_OURS: weakref.WeakSet[Any] = weakref.WeakSet()


def _is_ours(record: logging.LogRecord) -> bool:
    """Whether a library record is about one of our connections during an outage."""
    args = record.args if isinstance(record.args, tuple) else ()
    first = args[0] if args else None
    if record.name == "aio_pika.robust_connection":  # "Connection attempt to %s failed", per retry
        return any(first is c for c in _OURS)
    if record.name == "aio_pika.tools":  # a robust channel's close callback finds the connection gone
        owner = getattr(getattr(getattr(first, "callback", None), "__self__", None), "_connection", None)
        return any(owner is c for c in _OURS)
    if record.name == "aiormq.connection" and record.exc_info and len(_OURS):
        return isinstance(record.exc_info[1], ConnectionError)  # the socket dropped: an outage
    return False


class _OneLinePerOutage(logging.Filter):
    """aio-pika and aiormq log on every reconnect attempt and on every dropped socket, some of it at
    ERROR with a traceback. For our connections the adapter logs one line when an outage starts and
    one when it ends; their records are demoted to DEBUG (still there for ``--debug``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and _is_ours(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


for _name in ("aio_pika.robust_connection", "aio_pika.tools", "aiormq.connection"):
    logging.getLogger(_name).addFilter(_OneLinePerOutage())


class _Outage:
    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.closing = False

    def down(self, *_: Any) -> None:
        if self.since is None and not self.closing:
            self.since = time.monotonic()
            log.warning("%s connection lost; reconnecting in the background", self.what)

    def up(self, *_: Any) -> None:
        if self.since is not None:
            log.warning("%s reconnected after %.1fs", self.what, time.monotonic() - self.since)
            self.since = None


async def connect(
    url: str, *, name: str = "outboxkit", reconnect_interval: float = 0.5
) -> tuple[aio_pika.abc.AbstractRobustConnection, _Outage]:
    """A robust connection that reconnects forever after a successful first connect; fails fast
    with ``UnavailableError`` when the broker cannot be reached now."""
    settings = _Settings(url)
    await probe(settings.host, settings.port, settings.display)
    outage = _Outage(f"RabbitMQ {settings.display}")
    try:
        conn = await aio_pika.connect_robust(
            settings.client_url,
            timeout=5,
            reconnect_interval=reconnect_interval,
            client_properties={"connection_name": name},
        )
    except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
        raise UnavailableError(f"RabbitMQ at {settings.display} is unavailable: {exc or type(exc).__name__}") from None
    _OURS.add(conn)
    conn.close_callbacks.add(outage.down)
    conn.reconnect_callbacks.add(outage.up)
    return conn, outage


async def declare_exchange(channel: aio_pika.abc.AbstractChannel, name: str) -> aio_pika.abc.AbstractExchange:
    """The durable topic exchange (idempotent; a robust channel re-declares it after a reconnect)."""
    try:
        return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigurationError(
            f"exchange {name!r} exists with other settings (want a durable topic): {exc}"
        ) from None


# -- publisher ----------------------------------------------------------------------------------------


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
        self._outage: _Outage | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._underlay: aiormq.Channel | None = None

    async def connect(self) -> None:
        self._conn, self._outage = await connect(
            self.url, name="outboxkit-relay", reconnect_interval=self.reconnect_interval
        )
        try:
            # on_return_raises: a basic.return fails the confirmation with PublishError (H8).
            channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
            await declare_exchange(channel, self.settings.exchange)
        except BaseException:
            await self.close()
            raise
        assert isinstance(channel, aio_pika.abc.AbstractRobustChannel)
        self._channel = channel

    async def close(self) -> None:
        conn, self._conn, self._channel, self._underlay = self._conn, None, None, None
        if conn is not None and not conn.is_closed:
            if self._outage is not None:
                self._outage.closing = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)

    async def _ready_channel(self) -> aiormq.Channel:
        """The open underlying channel; after an outage or a channel error (an oversized message
        closes the channel) wait until aio-pika has reopened it."""
        underlay = self._underlay
        if underlay is not None and not underlay.is_closed:
            return underlay
        assert self._channel is not None
        async with asyncio.timeout(self.ack_timeout):
            while True:
                with contextlib.suppress(aiormq.exceptions.ChannelInvalidStateError):
                    # The concrete aiormq.Channel: its basic_publish takes wait=False.
                    underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
                    if not underlay.is_closed:
                        self._underlay = underlay
                        return underlay
                await asyncio.sleep(0.05)

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        if self._channel is None:
            raise UnavailableError("RabbitMQ publisher is not connected")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[None] = loop.create_future()
        try:
            # Awaited here, in call order, so a later publish never overtakes this one (G5).
            channel = await self._ready_channel()
        except TimeoutError:
            result.set_exception(
                TransientError(f"RabbitMQ {self.settings.display}: no open channel within {self.ack_timeout}s")
            )
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
                result.set_exception(TransientError(f"no confirm for {event.id} within {self.ack_timeout}s"))
            send.cancel()

        timer = loop.call_later(self.ack_timeout, on_timeout)

        def on_done(fut: asyncio.Future[Any]) -> None:
            timer.cancel()
            if result.done():
                if not fut.cancelled():
                    fut.exception()  # retrieved: no "exception was never retrieved" noise
                return
            if fut.cancelled():
                result.set_exception(TransientError(f"publish of {event.id} was cancelled"))
                return
            exc = fut.exception()
            if exc is not None:
                result.set_exception(translate(exc, event))
            elif isinstance(fut.result(), aiormq.spec.Basic.Ack):
                result.set_result(None)
            else:  # a returned message when on_return_raises is off; never counted as delivered
                result.set_exception(UnroutableError(f"no queue is bound for routing key {event.topic!r}"))

        send.add_done_callback(on_done)
        return result


def translate(exc: BaseException, event: OutboxEvent) -> DeliveryError:
    """A driver error -> an outboxkit error, keeping the broker's reason."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiormq.exceptions.PublishError):
        frame = exc.message.delivery if exc.message is not None else None
        reason = f"{getattr(frame, 'reply_code', '?')} {getattr(frame, 'reply_text', '')}".strip()
        return UnroutableError(
            f"RabbitMQ returned {event.id}: no queue is bound to the exchange for routing key "
            f"{event.topic!r} ({reason}); bind a queue (`outboxkit provision --queue NAME`), then it is retried"
        )
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return TransientError(f"RabbitMQ nacked {event.id} (queue full or internal error)")
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        text = str(exc.args[0]) if exc.args else str(exc)
        match = _TOO_LARGE.search(text)
        # One oversized message closes the channel: every publish in flight on it fails with the
        # same reason, but only the one that is really over the limit is refused for good.
        if match and len(event.payload) > int(match.group(2)):
            return PermanentError(f"RabbitMQ refused {event.id}: {text}")
        return TransientError(f"RabbitMQ closed the channel: {text}")
    if isinstance(exc, aiormq.exceptions.ChannelClosed | aiormq.exceptions.ChannelInvalidStateError):
        return TransientError(f"RabbitMQ channel closed: {exc}")
    return TransientError(f"RabbitMQ publish failed: {type(exc).__name__}: {exc}")


# -- consumer -----------------------------------------------------------------------------------------


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


class RabbitMQConsumer:
    """A durable quorum queue named ``group``, bound to the exchange with ``topics`` as binding keys
    (AMQP topic patterns: ``orders.*``, ``orders.#``).

    ``retry(delay)`` keeps the message unacked for ``delay`` seconds, then nacks it with requeue:
    the quorum queue redelivers it with ``x-delivery-count`` one higher. A waiting message holds one
    prefetch slot; after a crash it comes back at once (at-least-once, the inbox de-duplicates).
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
        self._outage: _Outage | None = None
        self._inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        self._later: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        self._conn, self._outage = await connect(self.url, name=f"outboxkit-consumer-{self.group}")
        try:
            channel = await self._conn.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            exchange = await declare_exchange(channel, self.settings.exchange)
            try:
                # Quorum: replicated and fsynced before the confirm, and it counts deliveries (H7).
                queue = await channel.declare_queue(self.group, durable=True, arguments={"x-queue-type": "quorum"})
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                raise ConfigurationError(
                    f"queue {self.group!r} exists with other settings (want quorum): {exc}"
                ) from None
            for topic in self.topics:
                await queue.bind(exchange, routing_key=topic)
            await queue.consume(self._on_message)
        except BaseException:
            await self.close()
            raise

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)  # unbounded, but prefetch bounds what is unacked

    async def close(self) -> None:
        for handle in self._later:
            handle.cancel()
        self._later.clear()
        for task in list(self._tasks):
            task.cancel()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed:
            if self._outage is not None:
                self._outage.closing = True
            # Unacked messages go back to the queue when the channel closes.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
        self._inbox = asyncio.Queue()

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
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
                continue  # that channel died: the broker redelivers the message on the new one
            out.append(Incoming(message=delivered_from(message), attempt=attempt_of(message), handle=message))
        return out

    async def ack(self, incoming: Incoming) -> None:
        message: aio_pika.abc.AbstractIncomingMessage = incoming.handle
        try:
            await message.ack()
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError) as exc:
            # The channel it came on is gone, so the broker already put it back: it will be
            # delivered again and the inbox drops it as a duplicate (at-least-once).
            log.info("ack of %s not possible (%s); it will be redelivered", incoming.message.event_id, exc)

    async def retry(self, incoming: Incoming, delay: float) -> None:
        message: aio_pika.abc.AbstractIncomingMessage = incoming.handle
        loop = asyncio.get_running_loop()

        async def requeue() -> None:
            with contextlib.suppress(aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
                await message.nack(requeue=True)

        def fire(handle: list[asyncio.TimerHandle]) -> None:
            self._later.discard(handle[0])
            task = loop.create_task(requeue())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        box: list[asyncio.TimerHandle] = []
        box.append(loop.call_later(max(0.0, delay), fire, box))
        self._later.add(box[0])
