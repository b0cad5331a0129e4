"""NATS JetStream: publish with PubAck, ``Nats-Msg-Id`` = event id, CloudEvents binary headers.

JetStream is at-least-once with a dedupe window (2 minutes by default) keyed by ``Nats-Msg-Id``,
so a re-publish after a relay crash inside that window is dropped by the server (G4, G6).
Durability (H7): JetStream acknowledges before fsync (``sync_interval`` 2 min by default); run the
server with ``sync_interval: always`` or a replicated stream if an OS crash must not lose events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from outboxkit.brokers._errors import Outage, Row, classify, consumer_errors, timed_out, unexpected
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

# -- error translation (H12; every row is in docs/exceptions.md and tests/unit) ---------------------

#: Exceptions of the publish path, most specific first: raised by ``publish_async`` before anything
#: is sent, or set on the PubAck future. ``nats.errors.TimeoutError`` and ``APIError`` have rules of
#: their own (:func:`translate`); anything else is a counted ``TransientError``.
PUBLISH_ERRORS: tuple[Row, ...] = (
    # The client cannot send now: closed for good (after most -ERR replies), closing, reconnecting
    # with its pending buffer full, or the server cannot be reached.
    (nats.errors.ConnectionClosedError, UnavailableError),
    (nats.errors.ConnectionDrainingError, UnavailableError),
    (nats.errors.ConnectionReconnectingError, UnavailableError),
    (nats.errors.OutboundBufferLimitError, UnavailableError),
    (nats.errors.StaleConnectionError, UnavailableError),  # and UnexpectedEOF
    (nats.errors.NoServersError, UnavailableError),
    (nats.errors.AuthorizationError, UnavailableError),
    # The message itself: no retry changes it.
    (nats.errors.MaxPayloadError, PermanentError),
    (nats.errors.BadSubjectError, PermanentError),
    (nats.errors.BadHeaderError, PermanentError),
    # Nothing captures the subject: a 503 "no responders" reply to the publish.
    (nats.js.errors.NoStreamResponseError, UnroutableError),
    (nats.errors.NoRespondersError, UnroutableError),
    (nats.js.errors.TooManyStalledMsgsError, TransientError),
)

#: JetStream ``err_code`` of an APIError in a PubAck -> class. A code not listed is a counted
#: ``TransientError`` (a newer server's code must not dead-letter events on its first sight).
JS_CODES: dict[int, type[DeliveryError]] = {
    # Refused for good: the message, or a header an outbox row carries (H11), is invalid here.
    10054: PermanentError,  # message size exceeds maximum allowed
    10097: PermanentError,  # header size exceeds maximum allowed of 64k
    10060: PermanentError,  # expected stream does not match (Nats-Expected-Stream)
    10070: PermanentError,  # wrong last msg ID (Nats-Expected-Last-Msg-Id)
    10071: PermanentError,  # wrong last sequence (Nats-Expected-Last-Sequence)
    10164: PermanentError,  # wrong last sequence
    10193: PermanentError,  # missing sequence for expected last sequence per subject
    10165: PermanentError,  # invalid per-message TTL (Nats-TTL)
    10166: PermanentError,  # per-message TTL is disabled
    **dict.fromkeys((10168, 10169, 10170, 10171, 10172), PermanentError),  # counters (Nats-Incr)
    **dict.fromkeys((10174, 10175, 10176, 10177, 10179, 10199, 10200, 10201), PermanentError),  # atomic batch
    **dict.fromkeys((10205, 10206, 10207, 10208), PermanentError),  # batch publish headers
    **dict.fromkeys((10188, 10189, 10190, 10191, 10192, 10203, 10212, 10223), PermanentError),  # schedules
    # The stream that captures the subject takes nothing: fixed by replacing the stream.
    10059: UnroutableError,  # stream not found
    10109: UnroutableError,  # invalid operation on sealed stream
    # JetStream itself is not available: an outage, not the event's fault (not counted).
    10008: UnavailableError,  # JetStream system temporarily unavailable
    10009: UnavailableError,  # JetStream cluster can not handle request (no leader)
    10035: UnavailableError,  # account not found
    10039: UnavailableError,  # JetStream not enabled for account
    10076: UnavailableError,  # JetStream not enabled
    10118: UnavailableError,  # stream is offline
    10194: UnavailableError,  # stream is offline: reason
    # Per event, a retry may fix it (counted).
    10077: TransientError,  # store failed, e.g. a full stream with discard=new
    10047: TransientError,  # insufficient storage resources available
    10028: TransientError,  # insufficient memory resources available
    10023: TransientError,  # insufficient resources
    10158: TransientError,  # duplicate message id is in process
    10163: TransientError,  # expected last sequence per subject temporarily unavailable
    10063: TransientError,  # expected stream sequence does not match
    10167: TransientError,  # too many requests
    10210: TransientError,  # atomic publish too many inflight
    10211: TransientError,  # batch publish too many inflight
}

#: Consumer calls (fetch, ack, nak): a connection problem reconnects the runner; the rest is retried.
CONSUMER_ERRORS: tuple[Row, ...] = (
    *(row for row in PUBLISH_ERRORS if row[1] is UnavailableError),
    (nats.errors.TimeoutError, TransientError),
    (nats.js.errors.APIError, TransientError),
)


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


async def connect(
    url: str,
    *,
    name: str = "outboxkit",
    outage: Outage | None = None,
    on_closed: Callable[[], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> Client:
    """A nats-py client that reconnects forever after a successful first connect.

    One line is logged per lost connection. A caller that passes its ``outage`` (and sets its
    ``closing`` before closing the client itself) also learns when the client closed for good:
    nats-py closes it after most ``-ERR`` replies of the server ('Authorization Violation', 'Unknown
    Protocol Operation', ...) and never reconnects it; ``outage.dead`` names the reply and
    ``on_closed`` runs."""
    await probe(url)
    watched = outage is not None
    outage = outage or Outage(log, f"NATS {redact_url(url)}")
    client: Client | None = None

    async def on_disconnected() -> None:
        if client is not None and not (client.is_closed or client.is_draining):
            outage.down()

    async def on_reconnected() -> None:
        outage.up()

    async def on_closed_cb() -> None:
        if client is None or outage.closing or not watched:
            return
        reason = client.last_error
        outage.kill(
            f"closed after an -ERR reply of the server ({str(reason).removeprefix('nats: ')})"
            if reason is not None
            else "the connection was closed and is not reconnected"
        )
        if on_closed is not None:
            on_closed()

    async def on_client_error(exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)
        if on_error is not None:
            on_error(exc)

    try:
        client = await nats.connect(
            servers=[url],
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            closed_cb=on_closed_cb,
            error_cb=on_client_error,
            # Buffer publishes made while reconnecting; their PubAck timeout still applies.
            pending_size=64 * 1024 * 1024,
        )
    except (nats.errors.Error, OSError) as exc:
        raise UnavailableError(f"NATS at {redact_url(url)} is unavailable: {exc}") from None
    return client


class NatsPublisher:
    """JetStream publisher. ``max_in_flight`` bounds unconfirmed publishes on the connection.

    PubAcks come back on a reply subject of our own (``_INBOX.<nuid>.<n>``), not through nats-py's
    ``publish_async``: that one raises a JetStream error reply inside its subscription callback, so
    the future never learns it and every refusal (a full stream, a wrong expected sequence, a
    message over the stream's limit) looked like a timeout.

    When nats-py closed the client for good (after an ``-ERR`` reply of the server), every publish in
    flight and every later one fails with ``UnavailableError`` naming the reply: only a new publisher
    can send again, and the relay builds one. A ``-ERR 'Permissions Violation for Publish to ...'``
    (the connection stays up) fails the publishes to that subject with ``UnroutableError``."""

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
        self.max_in_flight = max_in_flight  # the relay bounds its window; nothing to configure here
        self._nc: Client | None = None
        self._inbox = ""
        self._tokens = itertools.count()
        self._outage = Outage(log, f"NATS {redact_url(self.url)}")
        # reply token -> (result, event) of every unconfirmed publish
        self._waiting: dict[str, tuple[asyncio.Future[None], OutboxEvent]] = {}

    async def connect(self) -> None:
        nc = await connect(
            self.url,
            name="outboxkit-relay",
            outage=self._outage,
            on_closed=self._fail_waiting,
            on_error=self._on_client_error,
        )
        self._inbox = nc.new_inbox()
        try:
            await nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        except Exception as exc:
            await nc.close()
            raise UnavailableError(f"NATS at {redact_url(self.url)}: cannot subscribe to replies: {exc}") from None
        self._nc = nc

    async def close(self) -> None:
        self._outage.closing = True
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(TimeoutError, nats.errors.Error):
                await asyncio.wait_for(self._nc.close(), 5)
        self._nc = None
        for result, _ in self._waiting.values():
            if not result.done():
                # Not the event's fault: the publisher went away before the answer (not counted).
                result.set_exception(UnavailableError("NATS publisher closed before the PubAck"))
        self._waiting.clear()

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        nc = self._nc
        if nc is None:
            raise UnavailableError("NATS publisher is not connected")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[None] = loop.create_future()
        if self._outage.dead is not None:
            result.set_exception(self._outage.unavailable(f"NATS cannot publish {event.id}"))
            return result
        token = str(next(self._tokens))
        try:
            headers = binary_headers(event, self.source)
            headers["Nats-Msg-Id"] = event.id
            self._waiting[token] = (result, event)
            await nc.publish(event.topic, event.payload, reply=f"{self._inbox}.{token}", headers=headers)
        except Exception as exc:
            self._waiting.pop(token, None)
            result.set_exception(translate(exc, event, self._outage))
            return result
        waiting = self._waiting

        def on_timeout() -> None:
            waiting.pop(token, None)
            if not result.done():
                result.set_exception(timed_out(self._outage, f"no PubAck for {event.id} within {self.ack_timeout}s"))

        timer = loop.call_later(self.ack_timeout, on_timeout)
        result.add_done_callback(lambda _: timer.cancel())
        return result

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._inbox) + 1 :], None)
        if entry is None or entry[0].done():
            return  # timed out already: the relay counted it as failed
        result, event = entry
        try:
            error = _pub_ack_error(msg)
        except Exception as exc:  # a reply we cannot read: not a confirmation
            error = unexpected(exc, f"NATS PubAck for {event.id}")
        if error is None:
            result.set_result(None)
        else:
            result.set_exception(translate(error, event))

    def _fail_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for result, _ in waiting.values():
            if not result.done():
                result.set_exception(self._outage.unavailable("NATS publish not confirmed"))

    def _on_client_error(self, exc: Exception) -> None:
        # nats-py lower-cases the reply: -ERR 'permissions violation for publish to "orders.created"'
        text = str(exc)
        _, found, rest = text.partition("permissions violation for publish to ")
        if not found:
            return
        denied = rest.strip().strip("\"'")
        for token, (result, event) in list(self._waiting.items()):
            if event.topic.lower() == denied and not result.done():
                del self._waiting[token]
                result.set_exception(
                    UnroutableError(
                        f"the NATS account may not publish to {event.topic!r}: {text.removeprefix('nats: ')}"
                    )
                )


def _pub_ack_error(msg: Msg) -> BaseException | None:
    """None for a PubAck; else the exception nats-py would have raised for this reply."""
    if msg.headers and msg.headers.get("Status") == "503":
        return nats.js.errors.NoStreamResponseError()
    reply = json.loads(msg.data)
    error = reply.get("error") if isinstance(reply, dict) else None
    if error is None:
        return None
    return nats.js.errors.APIError(
        code=error.get("code"), err_code=error.get("err_code"), description=error.get("description")
    )


def translate(exc: BaseException, event: OutboxEvent, outage: Outage | None = None) -> DeliveryError:
    """A nats-py exception of the publish path as an outboxkit error (tables above)."""
    if isinstance(exc, DeliveryError):
        return exc
    subject = event.topic
    what = f"{event.id} to {subject!r}"
    if isinstance(exc, nats.js.errors.APIError):
        return _api_error(exc, what, subject)
    if isinstance(exc, nats.errors.TimeoutError):
        message = f"NATS timed out publishing {what}"
        return timed_out(outage, message) if outage is not None else TransientError(message)
    kind = classify(exc, PUBLISH_ERRORS)
    if kind is UnavailableError:
        if outage is not None and outage.dead is not None:
            return outage.unavailable(f"NATS cannot publish {what} ({exc})")
        return UnavailableError(f"NATS cannot publish {what} now: {exc}")
    if kind is UnroutableError:
        return UnroutableError(f"no JetStream stream captures subject {subject!r}: create one")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PermanentError(f"message of {len(event.payload)} bytes exceeds the NATS server's max_payload")
    if kind is not None:
        return kind(f"NATS refused {what}: {exc}")
    return unexpected(exc, f"NATS publish of {what}")


def _api_error(exc: nats.js.errors.APIError, what: str, subject: str) -> DeliveryError:
    code = exc.err_code
    kind = JS_CODES.get(code, TransientError) if code is not None else TransientError
    if code is None and (exc.code == 503 or isinstance(exc, nats.js.errors.ServiceUnavailableError)):
        kind = UnavailableError  # a bare 503 status: JetStream is not answering
    reason = f"{exc.description} (code {exc.code}, err_code {code})"
    if kind is UnroutableError:
        return UnroutableError(f"the JetStream stream of {subject!r} takes nothing: {reason}")
    return kind(f"JetStream refused {what}: {reason}")


def _consumer_error(exc: Exception) -> DeliveryError:
    kind = classify(exc, CONSUMER_ERRORS)
    if kind is None:
        return unexpected(exc, "NATS consumer")
    return kind(f"NATS consumer: {type(exc).__name__}: {exc}")


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
        self._outage = Outage(log, f"NATS consumer {redact_url(url)}")

    async def connect(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self._outage = Outage(log, f"NATS consumer {redact_url(self.url)}")
        self._nc = await connect(self.url, name=f"outboxkit-consumer-{self.group}", outage=self._outage)
        js = self._nc.jetstream()
        try:
            with consumer_errors(_consumer_error):
                try:
                    stream = await js.find_stream_name_by_subject(self.topics[0])
                except nats.js.errors.NotFoundError:
                    raise ConfigurationError(f"no JetStream stream captures {self.topics[0]!r}: create one") from None
                config = ConsumerConfig(
                    durable_name=self.group,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.ack_wait,
                    max_ack_pending=10_000,
                    **(
                        {"filter_subject": self.topics[0]}
                        if len(self.topics) == 1
                        else {"filter_subjects": self.topics}
                    ),
                )
                self._sub = await js.pull_subscribe(self.topics[0], durable=self.group, stream=stream, config=config)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._outage.closing = True
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(TimeoutError, nats.errors.Error):
                await asyncio.wait_for(self._nc.close(), 5)
        self._nc = None
        self._sub = None

    def _check_alive(self) -> None:
        if self._sub is None:
            raise UnavailableError("NATS consumer is not connected")
        if self._outage.dead is not None:
            raise self._outage.unavailable("NATS consumer cannot receive")

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        self._check_alive()
        with consumer_errors(_consumer_error):
            try:
                msgs = await self._sub.fetch(max_messages, timeout=timeout)
            except nats.errors.TimeoutError:
                if self._outage.is_down:
                    raise self._outage.unavailable("NATS fetch timed out") from None
                return []
            return [Incoming(delivered_from(m), attempt=_delivery_count(m), handle=m) for m in msgs]

    async def ack(self, incoming: Incoming) -> None:
        with consumer_errors(_consumer_error):
            try:
                await incoming.handle.ack_sync(timeout=5.0)
            except nats.errors.MsgAlreadyAckdError:
                return  # acked (or nak'ed) once already: the server has its answer

    async def retry(self, incoming: Incoming, delay: float) -> None:
        with consumer_errors(_consumer_error):
            try:
                await incoming.handle.nak(delay=delay)
            except nats.errors.MsgAlreadyAckdError:
                return


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
