"""The inbox runner: receive -> (record id + handler) in one DB transaction -> commit -> ack.

Failure rules:

* handler raises: the transaction rolls back (side effects and the inbox row vanish together) and
  the message is redelivered after a backoff; after ``max_attempts`` it becomes a dead letter in
  ``<inbox>_dead`` (with the error), its id is recorded so a redelivery is a duplicate, and it is
  acked — other keys were never blocked;
* crash after commit, before ack: the broker redelivers, the id is found, the handler is not
  called again (G7);
* the broker or the database goes away: the runner reconnects with backoff, one log line per outage.
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
from outboxkit.errors import TransientError, UnavailableError
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import Database, TableRef
from outboxkit.stores.registry import database_for

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
    out_of_order: int = 0
    started: float = field(default_factory=time.monotonic)


class InboxRunner:
    """Runs ``handler(conn, event)`` effectively once per event id for consumer ``name``.

    ``conn`` is the consumer's database connection with the transaction open: a psycopg
    ``Connection``, a ``sqlite3.Connection``, or for MariaDB/MySQL a connection with the same
    ``execute(sql, params)`` (``conn.native`` is the PyMySQL connection). A sync handler runs in a
    worker thread; an ``async def`` handler is awaited on the event loop with the same (sync)
    connection, so it can await other I/O while its database statements stay short. The handler
    must not commit or roll back.

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
        self.stats = InboxStats()
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failures: dict[str, int] = {}  # for buses without a delivery count
        self._last_sequence: dict[str, int] = {}
        self._database = database_for(db)
        self._claim_sql = self._database.inbox().claim_sql(self.ref)
        self._dead_sql = self._database.inbox().dead_sql(self.ref)

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, first: Consumer | None = None) -> None:
        """Consume until ``stop`` is set. ``first``: an already connected consumer to start with."""
        consumer: Consumer | None = first
        self._loop = asyncio.get_running_loop()
        outage: float | None = None
        attempt = 0
        while not stop.is_set():
            try:
                if consumer is None:
                    consumer = self.consumer_factory()
                    await consumer.connect()
                if outage is not None:
                    log.warning("consumer %s resumed after %.1fs", self.name, time.monotonic() - outage)
                    outage, attempt = None, 0
                messages = await consumer.receive(self.batch, 1.0)
                for incoming in messages:
                    await self._handle(consumer, incoming)
            except (TransientError, UnavailableError, OSError) as exc:
                if outage is None:
                    outage = time.monotonic()
                    log.warning("consumer %s paused: %s; retrying until it is back", self.name, exc)
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
        try:
            if self.is_async:
                outcome = await self._transaction_async(event)
            else:
                outcome = await asyncio.to_thread(self._transaction_sync, event)
        except _HandlerFailed as failed:
            await self._failed(consumer, incoming, event, failed.error)
            return
        if outcome == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.processed += 1
            self._failures.pop(event.id, None)
            self._note_order(event)
        await consumer.ack(incoming)

    async def _failed(self, consumer: Consumer, incoming: Incoming, event: Event, error: str) -> None:
        self.stats.failed += 1
        counted = self._failures.get(event.id, 0) + 1
        self._failures[event.id] = counted
        attempts = max(incoming.attempt, counted)
        if attempts >= self.max_attempts:
            await asyncio.to_thread(self._dead_letter, event, error, attempts)
            self.stats.dead_lettered += 1
            self._failures.pop(event.id, None)
            log.error("dead-lettered event %s after %d attempts: %s", event.id, attempts, error.splitlines()[-1])
            await consumer.ack(incoming)
            return
        delay = backoff_delay(attempts, base=self.retry_base, cap=self.retry_cap)
        log.warning("handler failed for %s (attempt %d), retrying in %.1fs", event.id, attempts, delay)
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

    # -- database side ----------------------------------------------------------------------------
    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = connect_sync(self.db)
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead connection may refuse to close
                conn.close()

    def _begin_claim(self, conn: Any, event: Event) -> bool:
        conn.execute("BEGIN")
        cur = conn.execute(self._claim_sql, (self.name, event.id))
        return bool(cur.rowcount == 1)

    def _transaction_sync(self, event: Event) -> str:
        conn = self._connection()
        try:
            if not self._begin_claim(conn, event):
                conn.execute("ROLLBACK")
                return "duplicate"
        except Exception as exc:
            self._reset(conn)
            raise _db_error(self._database, exc) from None
        try:
            result = self.handler(conn, event)
            if inspect.isawaitable(result):
                # A plain function that returned a coroutine (a wrapper, a partial): run it on the
                # event loop and wait here, still inside the transaction.
                assert self._loop is not None
                asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result()
        except Exception:
            self._reset(conn)
            raise _HandlerFailed(traceback.format_exc(limit=5)) from None
        try:
            conn.execute("COMMIT")
        except Exception as exc:
            self._reset(conn)
            raise _db_error(self._database, exc) from None
        return "processed"

    async def _transaction_async(self, event: Event) -> str:
        # The claim and the commit are quick; the handler is awaited in between on the same
        # connection and transaction.
        conn = self._connection()
        try:
            if not self._begin_claim(conn, event):
                conn.execute("ROLLBACK")
                return "duplicate"
        except Exception as exc:
            self._reset(conn)
            raise _db_error(self._database, exc) from None
        try:
            result = self.handler(conn, event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._reset(conn)
            raise _HandlerFailed(traceback.format_exc(limit=5)) from None
        try:
            conn.execute("COMMIT")
        except Exception as exc:
            self._reset(conn)
            raise _db_error(self._database, exc) from None
        return "processed"

    def _dead_letter(self, event: Event, error: str, attempts: int) -> None:
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            conn.execute(self._claim_sql, (self.name, event.id))
            headers = json.dumps(dict(event.headers))
            row = (self.name, event.id, event.topic, event.key, event.payload, headers, error, attempts)
            conn.execute(self._dead_sql, row)
            conn.execute("COMMIT")
        except Exception as exc:
            self._reset(conn)
            raise _db_error(self._database, exc) from None

    def _reset(self, conn: Any) -> None:
        try:
            conn.execute("ROLLBACK")
        except Exception:
            # The connection is broken: drop it, the next message reconnects.
            try:
                conn.close()
            finally:
                self._conn = None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _HandlerFailed(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _db_error(database: Database, exc: Exception) -> Exception:
    # The database's own translation table: a lost connection is UnavailableError (reconnect), a
    # busy database TransientError (retry); anything else is re-raised as it is.
    ours = database.translate(exc, "inbox")
    return ours if ours is not None else exc
