"""Redis Streams: XADD with its reply as the confirmation, a consumer group for subscribers.

The topic names the stream. Redis has no CloudEvents binding, so each entry carries the attributes
as fields of the same names (``specversion``, ``id``, ``source``, ``type``, ``time``, ``subject``,
``datacontenttype``), the payload as ``data`` and each user header ``name`` as ``h-name``
(docs/buses/redis.md).

Publishing: XADDs issued in the same event-loop tick go out as one non-transactional pipeline on
one connection, and the next pipeline only after the previous one answered, so entries are stored
in call order (G5). The XADD reply (the entry id) is the confirmation (G3). Redis 7 has no dedupe
id (``native_dedupe=False``): a re-sent event is a second entry, which the inbox drops (G7).

Durability (H7): Redis acknowledges an XADD once it is in memory. Without AOF (``appendonly no``)
a restart loses acknowledged entries; ``connect()`` warns about it. Safe: ``appendonly yes`` with
``appendfsync always`` (or ``everysec``, which can lose about a second on an OS crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.exceptions as rx
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from outboxkit.brokers._errors import Outage, Row, classify, consumer_errors, for_consumer, timed_out, unexpected
from outboxkit.brokers.base import Delivered, Features, Incoming
from outboxkit.core.envelope import OutboxEvent, cloudevent_attributes
from outboxkit.core.urls import redact_url
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    OutboxkitError,
    PermanentError,
    TransientError,
    UnavailableError,
    UnroutableError,
)

log = logging.getLogger("outboxkit.redis")

#: Redis refuses a bulk string over ``proto-max-bulk-len`` (512 MB by default) with a protocol error
#: and drops the connection, which would look transient and be retried forever (H9): refuse it here.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
HEADER_PREFIX = "h-"
DATA_FIELD = "data"
_MAX_PIPELINE = 4096  # XADDs per pipeline; more wait for the next round trip
_OPTIONS = frozenset({"maxlen", "max_bytes", "start", "claim_idle", "consumer"})
_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)

# -- error translation (H12; every row is in docs/exceptions.md and tests/unit) ---------------------

#: redis-py exceptions, most specific first. redis-py turns an error reply into a class by its first
#: word (and strips that word from the message): -NOAUTH/-WRONGPASS AuthenticationError, -LOADING
#: BusyLoadingError, -READONLY ReadOnlyError, -OOM OutOfMemoryError, -NOPERM NoPermissionError, ...
#: Other replies are a plain ResponseError, classed by their first word (:data:`REPLY_PREFIXES`).
PUBLISH_ERRORS: tuple[Row, ...] = (
    # The server cannot take writes from us now, whatever the event: an outage (not counted).
    (rx.AuthenticationError, UnavailableError),  # -NOAUTH, -WRONGPASS (a password changed)
    (rx.AuthorizationError, UnavailableError),
    (rx.BusyLoadingError, UnavailableError),  # -LOADING: a restarted server still reads its data
    (RedisConnectionError, UnavailableError),  # lost/refused connection, -ERR max number of clients
    (rx.ReadOnlyError, UnavailableError),  # -READONLY: we talk to a replica (after a failover)
    (rx.OutOfMemoryError, UnavailableError),  # -OOM: maxmemory reached with noeviction
    (rx.MasterDownError, UnavailableError),  # -MASTERDOWN: a replica lost its primary
    (rx.ClusterDownError, UnavailableError),  # -CLUSTERDOWN
    (rx.InvalidResponse, UnavailableError),  # replies out of step: the connection is reset
    # This stream (key) takes nothing from us: ACL, or another cluster node owns it.
    (rx.NoPermissionError, UnroutableError),  # -NOPERM
    (rx.AskError, UnroutableError),  # -MOVED, -ASK: a cluster; outboxkit speaks to one node
    # The entry itself cannot be encoded.
    (rx.DataError, PermanentError),
    # Per event, a retry may fix it (counted).
    (RedisTimeoutError, TransientError),  # no reply within ack_timeout (UnavailableError in an outage)
    (rx.TryAgainError, TransientError),
    (rx.ExecAbortError, TransientError),
    (rx.NoScriptError, TransientError),
    (ResponseError, TransientError),  # by REPLY_PREFIXES first
    (OSError, UnavailableError),
)

#: First word of an error reply redis-py has no class for -> class; any other reply is transient.
REPLY_PREFIXES: dict[str, type[DeliveryError]] = {
    "WRONGTYPE": UnroutableError,  # the key exists and is not a stream
    "MISCONF": UnavailableError,  # RDB snapshots fail: the server refuses writes until fixed
    "NOREPLICAS": UnavailableError,  # min-replicas-to-write not met
    "BUSY": TransientError,  # a script or module command is running
    "ERR": TransientError,  # a generic error (an unknown or renamed command, ...)
}


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """A ``redis://`` URL split into what redis-py connects to and outboxkit's own query options."""

    client_url: str
    maxlen: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    start: str = "0"
    claim_idle: float = 30.0
    consumer: str | None = None


def parse_url(url: str) -> RedisOptions:
    """``redis://[:password@]host:6379/0?maxlen=N&max_bytes=N&start=0|$&claim_idle=S&consumer=NAME``.

    Other query parameters go to redis-py unchanged (``socket_timeout`` and friends)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a Redis URL: {redact_url(url)!r} (use redis://host:6379/0)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigurationError(f"bad port in Redis URL {redact_url(url)!r}") from None
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(name, value) if name in _OPTIONS else rest.append((name, value)))
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    try:
        maxlen = int(ours["maxlen"]) if ours.get("maxlen") else None
        max_bytes = int(ours["max_bytes"]) if ours.get("max_bytes") else DEFAULT_MAX_BYTES
        claim_idle = float(ours["claim_idle"]) if ours.get("claim_idle") else 30.0
    except ValueError as exc:
        raise ConfigurationError(f"bad option in Redis URL {redact_url(url)!r}: {exc}") from None
    start = ours.get("start") or "0"
    if (maxlen is not None and maxlen <= 0) or max_bytes <= 0 or claim_idle <= 0 or start not in ("0", "$"):
        raise ConfigurationError(
            f"bad option in Redis URL {redact_url(url)!r}: maxlen, max_bytes and claim_idle must be "
            "positive, start must be 0 or $"
        )
    return RedisOptions(client_url, maxlen, max_bytes, start, claim_idle, ours.get("consumer") or None)


def _client(url: str, *, socket_timeout: float | None) -> Redis:
    # No hidden retries: a lost connection fails the pipeline in hand (TransientError), the pool opens
    # a new connection for the next one, and the relay decides what to resend.
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=3.0,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


async def _open(url: str, client_url: str, *, socket_timeout: float | None) -> Redis:
    client = _client(client_url, socket_timeout=socket_timeout)
    try:
        await asyncio.wait_for(client.ping(), 5.0)
    except (RedisError, *_CONNECTION_ERRORS) as exc:
        await client.aclose()
        raise UnavailableError(f"Redis at {redact_url(url)} is unavailable: {exc or 'timed out'}") from None
    return client


async def warn_if_not_durable(client: Redis, url: str) -> bool:
    """Log one WARNING when the server runs without AOF; returns whether it does (H7).

    ``CONFIG`` may be disabled or renamed (managed Redis): then nothing is known and nothing logged."""
    try:
        reply = await _call(client, "CONFIG", "GET", "appendonly")
    except RedisError as exc:
        log.debug("cannot read Redis appendonly setting: %s", exc)
        return True
    values = _pairs(reply)
    if values.get("appendonly", "yes") == "no":
        log.warning(
            "Redis at %s runs without AOF (appendonly no): acknowledged events are lost if it restarts; "
            "set appendonly yes and appendfsync always (or everysec)",
            redact_url(url),
        )
        return False
    return True


def _pairs(reply: Any) -> dict[str, str]:
    """CONFIG GET answers a dict (redis-py's callback) or a flat list of name, value."""
    items = reply.items() if isinstance(reply, Mapping) else zip(reply[::2], reply[1::2], strict=True)
    return {_text(k): _text(v) for k, v in items}


async def _call(client: Redis, *args: Any, **options: Any) -> Any:
    """One command, parsed by redis-py's reply callback for it (``options`` reach the callback)."""
    return await client.execute_command(*args, **options)  # type: ignore[no-untyped-call]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- wire format -----------------------------------------------------------------------------------


def entry_fields(event: OutboxEvent, default_source: str) -> list[str | bytes]:
    """The XADD field/value list of ``event``: CloudEvents attributes by name, ``data``, ``h-`` headers."""
    fields: list[str | bytes] = []
    for name, value in cloudevent_attributes(event, default_source).items():
        fields += (name, value)
    if "traceparent" in event.headers:
        # The CloudEvents distributed-tracing extension attribute, next to the user header.
        fields += ("traceparent", event.headers["traceparent"])
    for name, value in event.headers.items():
        fields += (HEADER_PREFIX + name, value)
    fields += (DATA_FIELD, event.payload)
    return fields


def delivered_from(topic: str, fields: Mapping[bytes, bytes] | Mapping[str, Any]) -> Delivered:
    """Decode one stream entry's fields back into a :class:`Delivered`.

    ``headers`` holds the user headers (``h-`` removed), the attributes as ``ce-<name>`` and
    ``content-type``, the way the NATS adapter presents them."""
    payload = b""
    attrs: dict[str, str] = {}
    headers: dict[str, str] = {}
    for raw_name, raw_value in fields.items():
        name = _text(raw_name)
        if name == DATA_FIELD:
            payload = raw_value if isinstance(raw_value, bytes) else str(raw_value).encode()
        elif name.startswith(HEADER_PREFIX):
            headers[name[len(HEADER_PREFIX) :]] = _text(raw_value)
        else:
            attrs[name] = _text(raw_value)
    for name, value in attrs.items():
        headers["content-type" if name == "datacontenttype" else f"ce-{name}"] = value
    return Delivered(
        event_id=attrs.get("id", ""), topic=topic, key=attrs.get("subject"), payload=payload, headers=headers
    )


def translate(exc: BaseException, topic: str, outage: Outage | None = None) -> DeliveryError:
    """A redis-py exception of the XADD path as an outboxkit error (tables above)."""
    if isinstance(exc, DeliveryError):
        return exc
    kind = classify(exc, PUBLISH_ERRORS)
    if kind is None:
        return unexpected(exc, f"Redis XADD to {topic!r}")
    text = str(exc) or type(exc).__name__
    if type(exc) is ResponseError:
        word = text.split(" ", 1)[0]
        kind = REPLY_PREFIXES.get(word, TransientError)
    elif isinstance(exc, RedisTimeoutError | TimeoutError):
        message = f"no reply to XADD to {topic!r}: {text}"
        return timed_out(outage, message) if outage is not None else TransientError(message)
    code = getattr(exc, "status_code", None)  # the reply's first word, which redis-py removed
    reply = f"{code} {text}" if code else text
    if kind is UnroutableError:
        if reply.startswith("WRONGTYPE"):
            return UnroutableError(f"Redis key {topic!r} exists and is not a stream: {reply}")
        return UnroutableError(f"Redis refuses XADD to {topic!r}: {reply}")
    if kind is UnavailableError:
        return UnavailableError(f"Redis cannot take XADD to {topic!r} now: {type(exc).__name__}: {reply}")
    if kind is PermanentError:
        return PermanentError(f"Redis cannot store the entry for {topic!r}: {reply}")
    return TransientError(f"Redis refused XADD to {topic!r}: {reply}")


def _consumer_error(exc: Exception) -> DeliveryError:
    return translate(exc, "the consumer's streams")


# -- publisher -------------------------------------------------------------------------------------


def _pack(args: Sequence[str | bytes]) -> bytes:
    """RESP encoding of one command. redis-py's generic packer costs more than the rest of a publish."""
    data = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(data) + b"".join([b"$%d\r\n%b\r\n" % (len(d), d) for d in data])


@dataclass(slots=True)
class _Pending:
    topic: str
    packed: bytes
    future: asyncio.Future[None]
    deadline: float


class RedisPublisher:
    """XADD publisher. ``max_in_flight`` bounds unconfirmed publishes; ``ack_timeout`` bounds the
    wait for a reply. ``maxlen`` and ``max_bytes`` default to the URL's query options."""

    # persistent=True holds only with AOF on (appendonly yes); connect() warns when it is off.
    features = Features(native_dedupe=False, persistent=True, ordered=True)

    def __init__(
        self,
        url: str,
        *,
        source: str = "/outboxkit",
        max_in_flight: int = 4096,
        ack_timeout: float = 5.0,
        maxlen: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.options = parse_url(url)
        self.url = url
        self.source = source
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout
        self.maxlen = maxlen if maxlen is not None else self.options.maxlen
        self.max_bytes = max_bytes if max_bytes is not None else self.options.max_bytes
        self._trim: list[str | bytes] = ["MAXLEN", "~", str(self.maxlen)] if self.maxlen else []
        self._client: Redis | None = None
        self._conn: Any = None  # the one connection every XADD goes through, in call order
        self._queue: deque[_Pending] = deque()  # accepted, not sent yet (call order)
        self._sending: list[_Pending] = []  # the pipeline on the wire (older than the queue)
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._unconfirmed = 0
        self._writer: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._outage = Outage(log, f"Redis {redact_url(url)}", recovery="reconnecting on the next attempt")

    async def connect(self) -> None:
        self._client = await _open(self.url, self.options.client_url, socket_timeout=self.ack_timeout)
        await warn_if_not_durable(self._client, self.url)
        # A connection of our own, outside the pool: pipelines go out back to back on it, and the
        # pool's per-command checkout would cost more than the XADD itself.
        self._conn = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await self._conn.connect()
        except (RedisError, *_CONNECTION_ERRORS) as exc:
            await self.close()
            raise UnavailableError(f"Redis at {redact_url(self.url)} is unavailable: {exc}") from None
        self._writer = asyncio.create_task(self._write_loop(self._conn), name="outboxkit-redis-writer")
        self._watch()

    async def close(self) -> None:
        if self._writer is not None:
            # Flush: what was handed over gets its answer (or its timeout) before the connection goes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), self.ack_timeout + 1)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._outage.closing = True
        # Not the events' fault: they were handed over and the publisher went away (not counted).
        self._fail([*self._sending, *self._queue], UnavailableError("Redis publisher closed before a reply"))
        self._queue.clear()
        if self._conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._conn.disconnect()
            self._conn = None
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()
            self._client = None

    async def _drained(self) -> None:
        while self._unconfirmed:
            await asyncio.sleep(0.01)

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        if self._client is None:
            raise UnavailableError("Redis publisher is not connected")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[None] = loop.create_future()
        writer = self._writer
        if writer is not None and writer.done() and self._outage.dead is None:
            # The only sender stopped (it never should): nothing would ever be sent again.
            failure = None if writer.cancelled() else writer.exception()
            self._outage.kill(f"its writer task stopped ({failure!r})")
        if self._outage.dead is not None:
            result.set_exception(self._outage.unavailable(f"Redis cannot publish {event.id}"))
            return result
        packed = _pack(["XADD", event.topic, *self._trim, "*", *entry_fields(event, self.source)])
        if len(packed) > self.max_bytes:
            result.set_exception(
                PermanentError(
                    f"stream entry of {len(packed)} bytes exceeds the Redis publisher's max_bytes={self.max_bytes}"
                )
            )
            return result
        while self._unconfirmed >= self.max_in_flight:
            self._room.clear()
            await self._room.wait()
        self._unconfirmed += 1
        self._queue.append(_Pending(event.topic, packed, result, loop.time() + self.ack_timeout))
        self._wakeup.set()
        return result

    def _settle(self, pending: _Pending, error: DeliveryError | None) -> None:
        if pending.future.done():
            return
        if error is None:
            pending.future.set_result(None)
        else:
            pending.future.set_exception(error)
        self._unconfirmed -= 1
        self._room.set()

    def _fail(self, batch: Sequence[_Pending], error: DeliveryError) -> None:
        for pending in batch:
            self._settle(pending, error)

    def _watch(self) -> None:
        """One timer for all publishes instead of one each: deadlines grow in call order, so only the
        oldest ones (the pipeline on the wire, then the head of the queue) can have expired."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for pending in [*self._sending, *self._queue]:
            if pending.deadline > now:
                break
            self._settle(pending, timed_out(self._outage, f"no XADD reply within {self.ack_timeout}s"))
        self._watchdog = loop.call_later(min(0.25, self.ack_timeout / 4), self._watch)

    async def _write_loop(self, conn: Any) -> None:
        """The only sender: one pipeline at a time on one connection, so entries land in call order."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch: list[_Pending] = []
                while self._queue and len(batch) < _MAX_PIPELINE:
                    pending = self._queue.popleft()
                    if not pending.future.done():  # timed out while queued: the relay resends it
                        batch.append(pending)
                if batch:
                    self._sending = batch
                    try:
                        await self._send(conn, batch)
                    finally:
                        self._sending = []

    async def _send(self, conn: Any, batch: list[_Pending]) -> None:
        answered = 0
        try:
            await conn.send_packed_command(b"".join(p.packed for p in batch), check_health=False)
            for pending in batch:
                try:
                    await conn.read_response()
                except ResponseError as exc:  # this XADD was refused; the connection is fine
                    self._settle(pending, translate(exc, pending.topic, self._outage))
                else:
                    self._settle(pending, None)
                answered += 1
        except asyncio.CancelledError:
            self._fail(batch[answered:], UnavailableError("Redis publisher closed while sending"))
            raise
        except _CONNECTION_ERRORS as exc:
            # redis-py has dropped the connection; the next send opens a new one (G8). A refused or
            # lost connection is an outage; a reply that did not come in time is counted.
            error = translate(exc, batch[answered].topic, self._outage)
            if isinstance(error, UnavailableError):
                self._outage.down(exc)
                error = UnavailableError(f"Redis connection lost: {type(exc).__name__}: {exc}")
            self._fail(batch[answered:], error)
            return
        except Exception as exc:  # any other driver failure fails this batch, never the writer
            with contextlib.suppress(Exception):
                await conn.disconnect()
            self._fail(batch[answered:], translate(exc, batch[answered].topic, self._outage))
            return
        self._outage.up()


# -- consumer --------------------------------------------------------------------------------------


def default_consumer_name() -> str:
    """Unique per process: a restarted process never inherits a dead one's pending entries by name;
    they come back through the idle-time reclaim instead."""
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisConsumer:
    """A consumer group ``group`` over the streams ``topics``.

    * ``connect()`` creates the group (with MKSTREAM) at ``start`` — ``0``: everything the stream still
      holds, the default, so nothing published before the first ``receive()`` is missed; ``$``: only
      entries added after the group was created.
    * ``receive()`` first hands back this process's own unacked entries (after a reopen), then retries
      that are due, then entries idle longer than ``claim_idle`` seconds in any consumer's pending list
      (a crashed process's), then new entries (XREADGROUP ``>``).
    * ``ack()`` is XACK. ``retry(delay)`` leaves the entry pending and claims it back after ``delay``;
      a delay longer than ``claim_idle`` is cut to ``claim_idle`` (the reclaim takes it then).
    * ``attempt`` is Redis' delivery count of the entry.
    """

    features = RedisPublisher.features

    def __init__(
        self,
        url: str,
        *,
        group: str,
        topics: Sequence[str],
        consumer: str | None = None,
        claim_idle: float | None = None,
        start: str | None = None,
    ) -> None:
        self.options = parse_url(url)
        self.url = url
        self.group = group
        self.topics = list(topics)
        if not self.topics:
            raise ConfigurationError("a Redis consumer needs at least one topic")
        self.name = consumer or self.options.consumer or default_consumer_name()
        self.claim_idle = claim_idle if claim_idle is not None else self.options.claim_idle
        self.start = start if start is not None else self.options.start
        self._client: Redis | None = None
        self._own_backlog: set[str] = set()  # topics whose own pending list is not re-read yet
        self._retries: dict[tuple[str, str], tuple[float, int]] = {}  # (topic, id) -> (due, min idle ms)
        self._next_sweep = 0.0
        self._outage = Outage(log, f"Redis consumer {redact_url(url)}", recovery="reconnecting on the next attempt")

    async def connect(self) -> None:
        # BLOCK of up to _MAX_BLOCK seconds must fit in the socket timeout.
        self._client = await _open(self.url, self.options.client_url, socket_timeout=_MAX_BLOCK + 10)
        await warn_if_not_durable(self._client, self.url)
        for topic in self.topics:
            try:
                with consumer_errors(_consumer_error):
                    try:
                        await _call(self._client, "XGROUP", "CREATE", topic, self.group, self.start, "MKSTREAM")
                    except ResponseError as exc:
                        if type(exc) is ResponseError and not str(exc).startswith("BUSYGROUP"):
                            raise UnroutableError(
                                f"cannot create consumer group {self.group!r} on {topic!r}: {exc}"
                            ) from None
                        if type(exc) is not ResponseError:
                            raise  # READONLY, NOPERM, OOM, ...: classed by the table
            except BaseException:
                await self.close()
                raise
        self._own_backlog = set(self.topics)
        self._next_sweep = 0.0

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()
            self._client = None
        self._retries.clear()

    def _connected(self) -> Redis:
        if self._client is None:
            raise UnavailableError("Redis consumer is not connected")
        return self._client

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        client = self._connected()
        deadline = time.monotonic() + timeout
        try:
            out = await self._own_pending(client, max_messages)
            if len(out) < max_messages:
                out += await self._due_retries(client, max_messages - len(out))
            if len(out) < max_messages and time.monotonic() >= self._next_sweep:
                out += await self._sweep(client, max_messages - len(out))
            while not out:
                now = time.monotonic()
                wait = min(deadline, self._next_due(), self._next_sweep) - now
                out = await self._read_new(client, max_messages, max(0.0, wait))
                if out or time.monotonic() >= deadline:
                    break
                out = await self._due_retries(client, max_messages)
                if not out and time.monotonic() >= self._next_sweep:
                    out = await self._sweep(client, max_messages)
        except OutboxkitError:
            raise
        except Exception as exc:
            error = for_consumer(_consumer_error(exc))
            if isinstance(error, UnavailableError):
                self._outage.down(exc)  # the runner reconnects
            raise error from exc
        self._outage.up()
        return out

    async def ack(self, incoming: Incoming) -> None:
        topic, entry_id = incoming.handle
        self._retries.pop((topic, entry_id), None)
        with consumer_errors(_consumer_error):
            await _call(self._connected(), "XACK", topic, self.group, entry_id)

    async def retry(self, incoming: Incoming, delay: float) -> None:
        topic, entry_id = incoming.handle
        delay = min(max(delay, 0.0), self.claim_idle)
        with consumer_errors(_consumer_error):
            # Re-claim it to ourselves with JUSTID: resets its idle time (so nobody's reclaim takes it
            # before the delay) without counting a delivery.
            await _call(
                self._connected(), "XCLAIM", topic, self.group, self.name, 0, entry_id, "JUSTID", parse_justid=True
            )
        # The guard leaves a little slack for clock granularity between our clock and the server's.
        self._retries[(topic, entry_id)] = (time.monotonic() + delay, max(0, int(delay * 1000) - 50))

    # -- the four sources of messages ---------------------------------------------------------------

    async def _own_pending(self, client: Redis, count: int) -> list[Incoming]:
        """Entries this consumer name holds unacked from before (a close and reopen): id 0 reads them."""
        out: list[Incoming] = []
        for topic in sorted(self._own_backlog):
            if len(out) >= count:
                break
            reply = await _call(
                client, "XREADGROUP", "GROUP", self.group, self.name, "COUNT", count - len(out), "STREAMS", topic, "0"
            )
            entries = _stream_entries(reply).get(topic, [])
            if len(entries) < count - len(out):
                self._own_backlog.discard(topic)
            # A history read counts as a delivery; the count comes from XPENDING.
            out += await self._with_attempts(client, topic, entries)
        return out

    async def _due_retries(self, client: Redis, count: int) -> list[Incoming]:
        now = time.monotonic()
        due = [(key, idle) for key, (at, idle) in self._retries.items() if at <= now][:count]
        out: list[Incoming] = []
        for (topic, entry_id), min_idle in due:
            self._retries.pop((topic, entry_id), None)
            # min-idle-time guard: if another consumer claimed it meanwhile its idle time was reset,
            # and XCLAIM returns nothing: it is theirs now.
            reply = await _call(client, "XCLAIM", topic, self.group, self.name, min_idle, entry_id)
            out += await self._with_attempts(client, topic, _entries(reply))
        return out

    async def _sweep(self, client: Redis, count: int) -> list[Incoming]:
        """XAUTOCLAIM entries idle for ``claim_idle`` in any consumer's pending list (a dead process's)."""
        self._next_sweep = time.monotonic() + max(0.05, self.claim_idle / 4)
        out: list[Incoming] = []
        for topic in self.topics:
            if len(out) >= count:
                break
            reply = await _call(
                client,
                "XAUTOCLAIM",
                topic,
                self.group,
                self.name,
                int(self.claim_idle * 1000),
                "0",
                "COUNT",
                count - len(out),
            )
            entries = _entries(reply[1])
            for entry_id, _ in entries:
                self._retries.pop((topic, entry_id), None)
            out += await self._with_attempts(client, topic, entries)
        return out

    async def _read_new(self, client: Redis, count: int, wait: float) -> list[Incoming]:
        block = max(1, int(min(wait, _MAX_BLOCK) * 1000))
        reply = await _call(
            client,
            "XREADGROUP",
            "GROUP",
            self.group,
            self.name,
            "COUNT",
            count,
            "BLOCK",
            block,
            "STREAMS",
            *self.topics,
            *([">"] * len(self.topics)),
        )
        out: list[Incoming] = []
        for topic, entries in _stream_entries(reply).items():
            out += [Incoming(delivered_from(topic, fields), 1, (topic, eid)) for eid, fields in entries if fields]
        return out[:count] if len(out) > count else out

    async def _with_attempts(self, client: Redis, topic: str, entries: list[tuple[str, Any]]) -> list[Incoming]:
        """Incoming messages with Redis' delivery counts; entries trimmed away are acked (nothing to deliver)."""
        gone = [eid for eid, fields in entries if not fields]
        if gone:
            await _call(client, "XACK", topic, self.group, *gone)
        live = [(eid, fields) for eid, fields in entries if fields]
        if not live:
            return []
        counts: dict[str, int] = {}
        reply = await _call(
            client, "XPENDING", topic, self.group, live[0][0], live[-1][0], len(live) + 16, self.name, parse_detail=True
        )
        for row in reply:
            counts[_text(row["message_id"])] = int(row["times_delivered"])
        return [Incoming(delivered_from(topic, fields), counts.get(eid, 1), (topic, eid)) for eid, fields in live]

    def _next_due(self) -> float:
        return min((at for at, _ in self._retries.values()), default=float("inf"))


_MAX_BLOCK = 5.0  # seconds per XREADGROUP BLOCK; receive() loops for longer timeouts


def _entries(raw: Any) -> list[tuple[str, Any]]:
    """``[[id, [f, v, ...]], ...]`` (or ``[id, None]`` for a deleted entry) -> ``[(id, {f: v})]``."""
    out: list[tuple[str, Any]] = []
    for item in raw or []:
        entry_id, fields = item[0], item[1]
        if entry_id is None:
            continue
        if not fields:
            out.append((_text(entry_id), None))
        elif isinstance(fields, Mapping):
            out.append((_text(entry_id), dict(fields)))
        else:
            out.append((_text(entry_id), dict(zip(fields[::2], fields[1::2], strict=True))))
    return out


def _stream_entries(reply: Any) -> dict[str, list[tuple[str, Any]]]:
    """An XREAD(GROUP) reply (list of [stream, entries], or a dict in RESP3) by stream name."""
    if not reply:
        return {}
    items = reply.items() if isinstance(reply, Mapping) else reply
    return {_text(stream): _entries(entries) for stream, entries in items}


# -- helpers for tests, the demo and the lab ------------------------------------------------------


async def read_stream(client: Redis, stream: str) -> list[Delivered]:
    """Every entry of ``stream`` in stream order (XRANGE, in pages)."""
    out: list[Delivered] = []
    start = "-"
    while True:
        page = _entries(await _call(client, "XRANGE", stream, start, "+", "COUNT", 1000))
        out += [delivered_from(stream, fields) for _, fields in page if fields]
        if len(page) < 1000:
            return out
        start = "(" + page[-1][0]


def unique_consumer_name() -> str:
    """A name for a second consumer of the same group in one process (tests, the lab)."""
    return f"{default_consumer_name()}-{uuid.uuid4().hex[:8]}"
