"""The JetStream publisher: PubAck on a reply subject of its own, ``Nats-Msg-Id`` = event id."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from outboxkit.brokers._errors import Outage, timed_out, unexpected
from outboxkit.brokers.base import Features
from outboxkit.brokers.nats.client import _check_url, connect, split_options
from outboxkit.brokers.nats.errors import _pub_ack_error, translate
from outboxkit.core.envelope import OutboxEvent, binary_headers
from outboxkit.core.urls import redact_url
from outboxkit.errors import UnavailableError, UnroutableError

log = logging.getLogger("outboxkit.nats")


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
        # (deadline, token) in send order: one sweeper task times them out, instead of a timer
        # per message (the timeout is the same for all, so deadlines come in order).
        self._deadlines: deque[tuple[float, str]] = deque()
        self._sweeper: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._outage = Outage(log, f"NATS {redact_url(self.url)}")  # a fresh state after a close()
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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
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
        self._deadlines.append((loop.time() + self.ack_timeout, token))
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        return result

    async def _sweep(self) -> None:
        """Fail the publishes whose PubAck did not come within ``ack_timeout``."""
        loop = asyncio.get_running_loop()
        deadlines, waiting = self._deadlines, self._waiting
        tick = min(0.1, self.ack_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            while deadlines and deadlines[0][0] <= now:
                _, token = deadlines.popleft()
                entry = waiting.pop(token, None)  # None: confirmed (or failed) already
                if entry is not None and not entry[0].done():
                    message = f"no PubAck for {entry[1].id} within {self.ack_timeout}s"
                    entry[0].set_exception(timed_out(self._outage, message))

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
