"""The inbox runner: receive -> (record id + handler) in one DB transaction -> commit -> ack.

Failure rules (every exception is classed on purpose, H12):

* the handler raises, or the transaction fails at COMMIT (a deferred foreign key, a serialization
  failure): the transaction rolls back (side effects and the inbox row vanish together) and the
  message is redelivered after a backoff; after ``max_attempts`` it becomes a dead letter in
  ``<inbox>_dead`` (with the error), its id is recorded so a redelivery is a duplicate, and it is
  acked — other keys were never blocked;
* while a message fails, later messages of its key wait (they are handed back to the broker without
  running the handler or counting an attempt), so they are never processed before it (the relay's
  order, G5, kept end to end); ``hold_failed_keys=False`` lets them pass instead. The hold lives in
  memory: after a restart the broker's redelivery order decides;
* crash after commit, before ack: the broker redelivers, the id is found, the handler is not
  called again (G7);
* the handler ended the transaction itself (DDL that commits implicitly on MariaDB/MySQL, its own
  COMMIT or ROLLBACK): a failed attempt with that reason, and the retry is not a duplicate
  (H14, see ``inbox/transaction.py``);
* a message without an event id cannot be de-duplicated: it is parked as a dead letter with the
  reason and acked, never handled;
* the broker or the database goes away (connection lost, read-only node, an error nobody
  classified): the runner reconnects with backoff, one log line per outage, and never exits for it.

Per-key and per-event memory is bounded (least recently used entries are forgotten).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outboxkit.brokers.base import Consumer, Incoming
from outboxkit.core.backoff import backoff_delay
from outboxkit.core.lru import BoundedDict
from outboxkit.errors import ConfigurationError, DeliveryError, SchemaError
from outboxkit.inbox.transaction import HandlerFailed, InboxTransactions
from outboxkit.stores.base import TableRef

log = logging.getLogger("outboxkit.inbox")

_SEQUENCE_HEADERS = ("ce-sequence", "ce_sequence", "cloudEvents:sequence", "cloudEvents_sequence", "sequence")


@dataclass(frozen=True, slots=True)
class Event:
    """What a handler receives."""

    id: str
    topic: str
    key: str | None
    payload: bytes
    headers: Mapping[str, str]
    attempt: int

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def sequence(self) -> int | None:
        for name in _SEQUENCE_HEADERS:
            value = self.headers.get(name)
            if value is not None:
                try:
                    return int(value)
                except ValueError:
                    return None
        return None


Handler = Callable[[Any, Event], Any]


@dataclass
class InboxStats:
    processed: int = 0
    duplicates: int = 0
    failed: int = 0
    dead_lettered: int = 0
    unidentified: int = 0  # messages without an event id, parked as dead letters (also counted there)
    held: int = 0  # messages handed back because an earlier message of their key was failing
    out_of_order: int = 0
    started: float = field(default_factory=time.monotonic)


class InboxRunner:
    """Runs ``handler(conn, event)`` effectively once per event id for consumer ``name``.

    ``conn`` is the consumer's database connection with the transaction open: a psycopg
    ``Connection``, a ``sqlite3.Connection``, or for MariaDB/MySQL a connection with the same
    ``execute(sql, params)`` (``conn.native`` is the PyMySQL connection). A sync handler runs in a
    worker thread; an ``async def`` handler is awaited on the event loop with the same (sync)
    connection, so it can await other I/O while its database statements stay short. The handler
    must not commit or roll back, nor run DDL (MariaDB/MySQL commit it implicitly): such an
    attempt counts as failed.

    >>> runner = InboxRunner(lambda: consumer_for(url, group="billing", topics=["orders.>"]),
    ...                      "postgresql://app@db/app", "billing", handle_order)   # doctest: +SKIP
    >>> await runner.run(stop_event)                                                   # doctest: +SKIP
    """

    def __init__(
        self,
        consumer_factory: Callable[[], Consumer],
        db: str,
        name: str,
        handler: Handler,
        *,
        ref: TableRef | None = None,
        max_attempts: int = 5,
        batch: int = 100,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
        check_order: bool = False,
        hold_failed_keys: bool = True,
        memory: int = 100_000,
    ) -> None:
        self.consumer_factory = consumer_factory
        self.db = db
        self.name = name
        self.handler = handler
        self.is_async = inspect.iscoroutinefunction(handler)
        self.ref = ref or TableRef("inbox")
        self.max_attempts = max_attempts
        self.batch = batch
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.check_order = check_order
        self.hold_failed_keys = hold_failed_keys
        self.stats = InboxStats()
        self._tx = InboxTransactions(db, name, self.ref)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Bounded memories (``memory`` entries each): failures per event id (for buses without a
        # delivery count), redeliveries caused by a hold (not the message's own failures), the
        # failing event each held key waits for, and the last sequence seen per key.
        self._failures: BoundedDict[str, int] = BoundedDict(memory)
        self._holds: BoundedDict[str, int] = BoundedDict(memory)
        self._held: BoundedDict[str, str] = BoundedDict(memory)
        self._last_sequence: BoundedDict[str, int] = BoundedDict(memory)

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, first: Consumer | None = None) -> None:
        """Consume until ``stop`` is set. ``first``: an already connected consumer to start with."""
        consumer: Consumer | None = first
        self._loop = asyncio.get_running_loop()
        outage: float | None = None
        attempt = 0
        started = first is not None
        while not stop.is_set():
            try:
                if consumer is None:
                    consumer = self.consumer_factory()
                    await consumer.connect()
                    started = True
                if outage is not None:
                    log.warning("consumer %s resumed after %.1fs", self.name, time.monotonic() - outage)
                    outage, attempt = None, 0
                messages = await consumer.receive(self.batch, 1.0)
                for incoming in messages:
                    await self._handle(consumer, incoming)
            except Exception as exc:
                # Unavailable, transient, an exception nobody classified — or, once running, a
                # configuration or schema problem that appeared later: reconnect both sides after
                # a backoff; the unacked messages come back (H12). Start-up stays strict.
                if isinstance(exc, SchemaError | ConfigurationError) and not started:
                    raise
                if outage is None:
                    outage = time.monotonic()
                    if isinstance(exc, SchemaError | ConfigurationError):
                        log.error("consumer %s paused: %s; retrying until it is fixed", self.name, exc)
                    elif isinstance(exc, DeliveryError | OSError):
                        log.warning("consumer %s paused: %s; retrying until it is back", self.name, exc)
                    else:
                        log.error("consumer %s paused by an unexpected error; retrying", self.name, exc_info=exc)
                attempt += 1
                if consumer is not None:
                    await consumer.close()
                    consumer = None
                await self._drop_connection()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff_delay(attempt, base=0.2, cap=5.0))
        if consumer is not None:
            await consumer.close()
        await self._drop_connection()

    async def _handle(self, consumer: Consumer, incoming: Incoming) -> None:
        msg = incoming.message
        event = Event(msg.event_id, msg.topic, msg.key, msg.payload, dict(msg.headers), incoming.attempt)
        reason = unidentified(event.id, self._tx.max_event_id)
        if reason is not None:
            # Without an id the inbox cannot tell this message from any other: handled under an
            # empty id, every later one would be a "duplicate". Parked with the reason instead.
            parked = await asyncio.to_thread(self._tx.park, event, reason)
            self.stats.unidentified += 1
            self.stats.dead_lettered += 1
            log.error("parked a message on %s as dead letter %s: %s", event.topic, parked, reason)
            await consumer.ack(incoming)
            return
        if self.hold_failed_keys and event.key is not None:
            waiting_for = self._held.get(event.key)
            if waiting_for is not None and waiting_for != event.id:
                # An earlier message of this key is failing: this one must not overtake it.
                self.stats.held += 1
                self._holds[event.id] = (self._holds.get(event.id) or 0) + 1
                await consumer.retry(incoming, self.retry_base)
                return
        try:
            if self.is_async:
                outcome = await self._transaction_async(event)
            else:
                outcome = await asyncio.to_thread(self._transaction_sync, event)
        except HandlerFailed as failed:
            await self._failed(consumer, incoming, event, failed.error)
            return
        if outcome == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.processed += 1
            self._note_order(event)
        self._resolved(event)
        await consumer.ack(incoming)

    def _resolved(self, event: Event) -> None:
        """The event is done with (processed, duplicate or dead letter): its key flows again."""
        self._failures.pop(event.id, None)
        self._holds.pop(event.id, None)
        if event.key is not None and self._held.get(event.key) == event.id:
            self._held.pop(event.key)

    async def _failed(self, consumer: Consumer, incoming: Incoming, event: Event, error: str) -> None:
        self.stats.failed += 1
        counted = (self._failures.get(event.id) or 0) + 1
        self._failures[event.id] = counted
        # The broker's delivery count includes redeliveries a hold caused; those were not failures.
        attempts = max(incoming.attempt - (self._holds.get(event.id) or 0), counted)
        if attempts >= self.max_attempts:
            await asyncio.to_thread(self._tx.dead_letter, event, error, attempts)
            self.stats.dead_lettered += 1
            self._resolved(event)
            log.error("dead-lettered event %s after %d attempts: %s", event.id, attempts, error.splitlines()[0])
            await consumer.ack(incoming)
            return
        if self.hold_failed_keys and event.key is not None:
            self._held[event.key] = event.id
        delay = backoff_delay(attempts, base=self.retry_base, cap=self.retry_cap)
        # The error's first line is its type and message; the traceback is an info line (shown
        # with `-v` or `--debug`), so the default log stays one line per failure.
        first, _, rest = error.partition("\n")
        log.warning("handler failed for %s (attempt %d), retrying in %.1fs: %s", event.id, attempts, delay, first)
        if rest:
            log.info("handler failure of %s:\n%s", event.id, rest.rstrip())
        await consumer.retry(incoming, delay)

    def _note_order(self, event: Event) -> None:
        if not self.check_order or event.key is None or event.sequence is None:
            return
        last = self._last_sequence.get(event.key)
        if last is not None and event.sequence < last:
            self.stats.out_of_order += 1
            log.warning("out of order for key %s: sequence %d after %d", event.key, event.sequence, last)
        else:
            self._last_sequence[event.key] = event.sequence

    # -- database side (inbox/transaction.py) ------------------------------------------------------
    async def _drop_connection(self) -> None:
        self._tx.drop()

    def _transaction_sync(self, event: Event) -> str:
        conn = self._tx.begin(event.id)
        if conn is None:
            return "duplicate"
        try:
            result = self.handler(conn, event)
            if inspect.isawaitable(result):
                # A plain function that returned a coroutine (a wrapper, a partial): run it on the
                # event loop and wait here, still inside the transaction.
                assert self._loop is not None
                asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result()
        except Exception as exc:
            self._tx.reset()
            raise HandlerFailed(_describe(exc)) from None
        self._tx.commit(conn, event.id)
        return "processed"

    async def _transaction_async(self, event: Event) -> str:
        # The claim and the commit are quick; the handler is awaited in between on the same
        # connection and transaction.
        conn = self._tx.begin(event.id)
        if conn is None:
            return "duplicate"
        try:
            result = self.handler(conn, event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._tx.reset()
            raise HandlerFailed(_describe(exc)) from None
        self._tx.commit(conn, event.id)
        return "processed"


#: the dead letter's error for a message the inbox cannot identify
UNIDENTIFIED = (
    "the message has no event id (no CloudEvents id or message id: published by something other"
    " than an outboxkit relay?); the inbox cannot tell it from other messages"
)


def unidentified(event_id: str, max_length: int = 255) -> str | None:
    """Why the inbox cannot use ``event_id`` to de-duplicate, or None when it can."""
    if not event_id.strip():
        return UNIDENTIFIED
    if len(event_id) > max_length:
        # Kept whole or not at all: a truncated id could make a different event a "duplicate".
        return f"the event id is {len(event_id)} characters long; this inbox table keeps at most {max_length}"
    if any(c < " " or "\ud800" <= c <= "\udfff" for c in event_id):
        return "the event id holds control characters or lone surrogates, which the inbox table cannot store"
    return None


def _describe(exc: BaseException) -> str:
    """The handler's error for the log and the dead letter: its type and message on the first
    line (what a log line shows), then the traceback (for the dead letter and debug logs)."""
    head = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return head + "\n" + "".join(traceback.format_exception(exc, limit=5))


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
