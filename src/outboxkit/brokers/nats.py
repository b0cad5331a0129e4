"""NATS JetStream: publish with PubAck, ``Nats-Msg-Id`` = event id, CloudEvents binary headers.

JetStream is at-least-once with a dedupe window (2 minutes by default) keyed by ``Nats-Msg-Id``,
so a re-publish after a relay crash inside that window is dropped by the server (G4, G6).
Durability (H7): JetStream acknowledges before fsync (``sync_interval`` 2 min by default); run the
server with ``sync_interval: always`` or a replicated stream if an OS crash must not lose events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from outboxkit.brokers.base import Delivered, Features, Incoming
from outboxkit.core.envelope import OutboxEvent, binary_headers
from outboxkit.core.urls import redact_url
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    TransientError,
    UnavailableError,
    UnroutableError,
)

log = logging.getLogger("outboxkit.nats")

# JetStream API error codes that no retry can fix.
_PERMANENT_CODES = {
    10054,  # message size exceeds maximum allowed
    10060,  # expected stream does not match
}


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """``nats://h:4222?ack_wait=5`` -> (``nats://h:4222``, {"ack_wait": "5"}): options are ours, not the server's."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    return urlunsplit(parts._replace(query="")), options


def _check_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls"):
        raise ConfigurationError(f"not a NATS URL: {redact_url(url)!r} (use nats://host:4222)")
    try:
        port = parts.port or 4222
    except ValueError:
        raise ConfigurationError(f"bad port in NATS URL {redact_url(url)!r}") from None
    return parts.hostname or "127.0.0.1", port


async def probe(url: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when nothing listens at ``url``: nats-py would retry forever."""
    host, port = _check_url(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise UnavailableError(f"NATS at {redact_url(url)} is unavailable: {exc or 'timed out'}") from None
    writer.close()


class _Outage:
    """Logs one line when a connection drops and one when it is back, not one per retry."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.client: Client | None = None

    async def down(self) -> None:
        closing = self.client is not None and (self.client.is_closed or self.client.is_draining)
        if self.since is None and not closing:
            self.since = time.monotonic()
            log.warning("%s connection lost; reconnecting in the background", self.what)

    async def up(self) -> None:
        if self.since is not None:
            log.warning("%s reconnected after %.1fs", self.what, time.monotonic() - self.since)
            self.since = None


async def connect(url: str, *, name: str = "outboxkit") -> Client:
    """A nats-py client that reconnects forever after a successful first connect."""
    await probe(url)
    outage = _Outage(f"NATS {redact_url(url)}")

    async def on_error(exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)

    try:
        outage.client = await nats.connect(
            servers=[url],
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            disconnected_cb=outage.down,
            reconnected_cb=outage.up,
            error_cb=on_error,
            # Buffer publishes made while reconnecting; their PubAck timeout still applies.
            pending_size=64 * 1024 * 1024,
        )
    except (nats.errors.Error, OSError) as exc:
        raise UnavailableError(f"NATS at {redact_url(url)} is unavailable: {exc}") from None
    return outage.client


class NatsPublisher:
    """JetStream publisher. ``max_in_flight`` bounds unconfirmed publishes on the connection."""

    features = Features(native_dedupe=True, persistent=True, ordered=True)

    def __init__(
        self,
        url: str,
        *,
        source: str = "/outboxkit",
        ack_timeout: float = 5.0,
        max_in_flight: int = 4096,
    ) -> None:
        _check_url(url)
        self.url = split_options(url)[0]
        self.source = source
        self.ack_timeout = ack_timeout
        self.max_in_flight = max_in_flight
        self._nc: Client | None = None
        self._js: Any = None

    async def connect(self) -> None:
        self._nc = await connect(self.url, name="outboxkit-relay")
        self._js = self._nc.jetstream(publish_async_max_pending=self.max_in_flight)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(TimeoutError, nats.errors.Error):
                await asyncio.wait_for(self._nc.close(), 5)
        self._nc = None

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        if self._js is None:
            raise UnavailableError("NATS publisher is not connected")
        headers = binary_headers(event, self.source)
        headers["Nats-Msg-Id"] = event.id
        loop = asyncio.get_running_loop()
        result: asyncio.Future[None] = loop.create_future()
        try:
            # No wait_stall: the relay never has more than max_in_flight unconfirmed publishes, so the
            # client's semaphore never blocks, and wait_stall would cost a Task per message.
            ack = await self._js.publish_async(event.topic, event.payload, headers=headers)
        except Exception as exc:
            result.set_exception(_translate(exc, event))
            return result

        def on_timeout() -> None:
            if not result.done():
                result.set_exception(TransientError(f"no PubAck for {event.id} within {self.ack_timeout}s"))
            ack.cancel()  # frees the client's in-flight slot

        timer = loop.call_later(self.ack_timeout, on_timeout)

        def on_done(fut: asyncio.Future[Any]) -> None:
            timer.cancel()
            if result.done():
                return
            if fut.cancelled():
                result.set_exception(TransientError(f"publish of {event.id} was cancelled"))
            elif fut.exception() is not None:
                result.set_exception(_translate(fut.exception(), event))  # type: ignore[arg-type]
            else:
                result.set_result(None)

        ack.add_done_callback(on_done)
        return result


def _translate(exc: BaseException, event: OutboxEvent) -> DeliveryError:
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PermanentError(f"message of {len(event.payload)} bytes exceeds the NATS server's max_payload")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return UnroutableError(f"no JetStream stream captures subject {event.topic!r}: create one with `outboxkit provision --broker URL --topic '{event.topic.split('.')[0]}.>'`")  # noqa: E501  # fmt: skip
    if isinstance(exc, nats.js.errors.APIError):
        code = getattr(exc, "err_code", None)
        if code in _PERMANENT_CODES:
            return PermanentError(f"JetStream refused the message: {exc.description} (code {code})")
        return TransientError(f"JetStream error: {exc.description} (code {code})")
    if isinstance(exc, nats.errors.BadHeaderError | nats.errors.BadSubjectError):
        return PermanentError(f"NATS refused the message: {exc}")
    return TransientError(f"NATS publish failed: {type(exc).__name__}: {exc}")


class NatsConsumer:
    """Durable JetStream pull consumer named ``group`` over ``topics`` (subjects, wildcards allowed).

    The stream that captures the topics must exist (the relay's stream); ``connect`` finds it and
    creates or updates the durable consumer. Acks are synchronous (double-ack) so that "acked" means
    the server recorded it. ``retry`` is a NAK with delay; ``attempt`` is JetStream's delivery count.
    Unacked messages come back after ``ack_wait`` (default 30 s).
    """

    features = NatsPublisher.features

    def __init__(self, url: str, *, group: str, topics: Sequence[str], ack_wait: float | None = None) -> None:
        _check_url(url)
        url, options = split_options(url)
        try:
            ack_wait = ack_wait if ack_wait is not None else float(options.get("ack_wait", 30.0))
        except ValueError:
            raise ConfigurationError(f"ack_wait must be a number of seconds, got {options['ack_wait']!r}") from None
        if not topics:
            raise ConfigurationError("a NATS consumer needs at least one topic (subject)")
        self.url = url
        self.group = group
        self.topics = list(topics)
        self.ack_wait = ack_wait
        self._nc: Client | None = None
        self._sub: Any = None

    async def connect(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self._nc = await connect(self.url, name=f"outboxkit-consumer-{self.group}")
        js = self._nc.jetstream()
        try:
            stream = await js.find_stream_name_by_subject(self.topics[0])
        except nats.js.errors.NotFoundError:
            await self.close()
            raise ConfigurationError(f"no JetStream stream captures {self.topics[0]!r}: create one with `outboxkit provision --broker URL --topic '{self.topics[0]}'`") from None  # noqa: E501  # fmt: skip
        config = ConsumerConfig(
            durable_name=self.group,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=10_000,
            **({"filter_subject": self.topics[0]} if len(self.topics) == 1 else {"filter_subjects": self.topics}),
        )
        self._sub = await js.pull_subscribe(self.topics[0], durable=self.group, stream=stream, config=config)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(TimeoutError, nats.errors.Error):
                await asyncio.wait_for(self._nc.close(), 5)
        self._nc = None
        self._sub = None

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        if self._sub is None:
            raise UnavailableError("NATS consumer is not connected")
        try:
            msgs = await self._sub.fetch(max_messages, timeout=timeout)
        except nats.errors.TimeoutError:
            return []
        except (nats.errors.Error, OSError) as exc:
            raise TransientError(f"NATS fetch failed: {exc}") from None
        return [Incoming(delivered_from(m), attempt=_delivery_count(m), handle=m) for m in msgs]

    async def ack(self, incoming: Incoming) -> None:
        try:
            await incoming.handle.ack_sync(timeout=5.0)
        except (nats.errors.Error, OSError) as exc:
            raise TransientError(f"NATS ack failed: {exc}") from None

    async def retry(self, incoming: Incoming, delay: float) -> None:
        try:
            await incoming.handle.nak(delay=delay)
        except (nats.errors.Error, OSError) as exc:
            raise TransientError(f"NATS nak failed: {exc}") from None


def _delivery_count(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # a message outside JetStream has no metadata
        return 1


# -- helpers for subscribers, the demo and tests ---------------------------------------------------


async def ensure_stream(nc: Client, name: str, subjects: Sequence[str], **config: Any) -> None:
    """Create the stream if missing (idempotent). ``config`` goes to ``StreamConfig``."""
    js = nc.jetstream()
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(name=name, subjects=list(subjects), **config)


def delivered_from(msg: Msg) -> Delivered:
    headers = dict(msg.headers or {})
    return Delivered(
        event_id=headers.get("ce-id") or headers.get("Nats-Msg-Id", ""),
        topic=msg.subject,
        key=headers.get("ce-subject"),
        payload=msg.data,
        headers=headers,
    )


async def read_stream(
    nc: Client, stream: str, subject: str = ">", *, idle_timeout: float | None = None
) -> AsyncIterator[Delivered]:
    """Every message of ``stream`` in stream order, from the start, through an ordered consumer.

    Stops after ``idle_timeout`` seconds without a message (None: never)."""
    js = nc.jetstream()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await queue.put(msg)

    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, cb=on_msg)
    try:
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), idle_timeout)
            except TimeoutError:
                return
            yield delivered_from(msg)
    finally:
        await sub.unsubscribe()
