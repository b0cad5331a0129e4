"""The XADD publisher: pipelines in call order on one connection of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from outboxkit.brokers._errors import Outage, timed_out
from outboxkit.brokers.base import Features
from outboxkit.brokers.redis.client import _open, parse_url, warn_if_not_durable
from outboxkit.brokers.redis.errors import _CONNECTION_ERRORS, translate
from outboxkit.brokers.redis.wire import _pack, entry_fields
from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.urls import redact_url
from outboxkit.errors import DeliveryError, PermanentError, UnavailableError

log = logging.getLogger("outboxkit.redis")

_MAX_PIPELINE = 4096  # XADDs per pipeline; more wait for the next round trip


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
        self._outage = Outage(log, self._outage.what, recovery=self._outage.recovery)  # fresh after a close()
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
