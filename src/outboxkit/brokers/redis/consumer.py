"""The consumer group the inbox runner reads from: own pending, retries, reclaims, new entries."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from outboxkit.brokers._errors import Outage, consumer_errors, for_consumer
from outboxkit.brokers.base import Incoming
from outboxkit.brokers.redis.client import _call, _open, _text, parse_url, warn_if_not_durable
from outboxkit.brokers.redis.errors import _consumer_error
from outboxkit.brokers.redis.publisher import RedisPublisher
from outboxkit.brokers.redis.wire import _entries, _stream_entries, delivered_from
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, OutboxkitError, UnavailableError, UnroutableError

log = logging.getLogger("outboxkit.redis")


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


def unique_consumer_name() -> str:
    """A name for a second consumer of the same group in one process (tests, the lab)."""
    return f"{default_consumer_name()}-{uuid.uuid4().hex[:8]}"
