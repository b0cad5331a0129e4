"""Publish right after commit (opt-in): the writing process publishes its own events as soon as
its transaction committed and marks them, with the relay as the safety net for whatever it did not
finish (the process died, the broker was down, an earlier event of the key was still pending).

Why it is safe:

* it publishes only rows it can read as committed and pending, so a rolled-back event is never
  published (G2), whatever the caller passes;
* it skips a row when an earlier row of the same key is still pending: the relay publishes that
  key in order instead (G5);
* it marks a row only after the broker confirmed it (G3); if it dies in between, the relay sends the
  row again with the same id (at-least-once, consumers de-duplicate).

>>> inline = InlinePublisher("postgresql://app@db/app", "nats://127.0.0.1:4222").start()   # doctest: +SKIP
>>> with conn.transaction():                                                                  # doctest: +SKIP
...     ids = [emit(conn, "orders.created", order, key=order["customer"])]
>>> inline.submit(ids)          # returns at once; publishing happens on inline's own thread  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future

from outboxkit.brokers.base import Publisher
from outboxkit.brokers.registry import publisher_for
from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.retry import classify
from outboxkit.errors import DeliveryError, OutboxkitError, UnavailableError
from outboxkit.stores.base import OutboxStore, TableRef
from outboxkit.stores.registry import store_for

log = logging.getLogger("outboxkit.inline")


class InlinePublisher:
    """Runs its own event loop on a daemon thread, so sync web handlers can hand ids over without
    waiting. ``submit`` never raises for delivery problems: the relay will deliver instead.

    Backpressure (its memory stays bounded whatever the broker does): at most ``max_pending``
    events are being published at once, and after a failure (broker or database unavailable, a
    publish that failed) it stops trying for a cool-down that grows while failures go on. Whatever
    it does not take is left to the relay at once — the writer is never slowed down.
    """

    def __init__(
        self,
        db: str,
        broker: str,
        *,
        ref: TableRef | None = None,
        source: str = "/outboxkit",
        max_pending: int = 10_000,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
    ) -> None:
        self.db, self.broker, self.ref, self.source = db, broker, ref, source
        self.max_pending = max_pending
        self.cooldown, self.max_cooldown = cooldown, max_cooldown
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="outboxkit-inline", daemon=True)
        self._store: OutboxStore | None = None
        self._publisher: Publisher | None = None
        self.published = 0
        self.left_to_relay = 0
        self._lock = threading.Lock()  # counters below are touched by submitting threads
        self._pending = 0
        self._paused_until = 0.0
        self._failures = 0
        self._inflight: set[Future[int]] = set()

    @property
    def pending(self) -> int:
        """Events handed over and not yet published or left to the relay."""
        return self._pending

    def start(self) -> InlinePublisher:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(30)
        return self

    async def _open(self) -> None:
        self._store = store_for(self.db, self.ref)
        await self._store.open()
        self._publisher = publisher_for(self.broker, source=self.source)
        await self._publisher.connect()

    def submit(self, ids: Sequence[str]) -> Future[int]:
        """Publish these just-committed events in the background; the future gives how many went out."""
        ids = list(ids)
        with self._lock:
            refuse = time.monotonic() < self._paused_until or self._pending + len(ids) > self.max_pending
            if refuse:
                self.left_to_relay += len(ids)
            else:
                self._pending += len(ids)
        if refuse:
            done: Future[int] = Future()
            done.set_result(0)
            return done
        future = asyncio.run_coroutine_threadsafe(self._publish_counted(ids), self._loop)
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        return future

    async def _publish_counted(self, ids: list[str]) -> int:
        try:
            return await self.publish_committed(ids)
        finally:
            with self._lock:
                self._pending -= len(ids)

    def _trouble(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            pause = min(self.max_cooldown, self.cooldown * 2 ** min(self._failures - 1, 10))
            self._paused_until = time.monotonic() + pause
        if self._failures == 1:
            log.warning("inline %s failed (%s); leaving events to the relay for %.1fs", what, exc, pause)

    def _fine(self) -> None:
        if self._failures:
            with self._lock:
                self._failures = 0
            log.warning("inline publishing works again")

    async def _ready(self) -> tuple[OutboxStore, Publisher]:
        """The store and a usable publisher; one that became unavailable (a client closed for good)
        is rebuilt here, after the cool-down."""
        store, publisher = self._store, self._publisher
        if store is None:
            raise OutboxkitError("InlinePublisher is not started")
        if publisher is None:
            publisher = publisher_for(self.broker, source=self.source)
            await publisher.connect()
            self._publisher = publisher
        return store, publisher

    async def publish_committed(self, ids: Sequence[str]) -> int:
        try:
            store, publisher = await self._ready()
            events = await store.fetch_committed(ids)
        except DeliveryError as exc:
            self._trouble("fetch", exc)
            with self._lock:
                self.left_to_relay += len(ids)
            return 0
        # Rows the relay must dead-letter (H11) are not ours to publish.
        events = [e for e in events if e.defect is None]
        with self._lock:
            self.left_to_relay += len(ids) - len(events)
        by_key: dict[object, list[OutboxEvent]] = defaultdict(list)
        for event in events:
            by_key[event.key if event.key is not None else ("", event.seq)].append(event)
        confirmed: list[int] = []
        failures: list[BaseException] = []

        async def lane(chain: list[OutboxEvent]) -> None:
            # One key at a time, in seq order, each confirmed before the next (G5).
            for i, event in enumerate(chain):
                try:
                    await (await publisher.publish(event))
                except Exception as exc:  # every failure leaves the rest of the key to the relay
                    failures.append(exc)
                    with self._lock:
                        self.left_to_relay += len(chain) - i
                    return
                confirmed.append(event.seq)

        await asyncio.gather(*(lane(chain) for chain in by_key.values()))
        if failures:
            error = classify(failures[0])
            self._trouble("publish", error)
            if isinstance(error, UnavailableError):
                # The client may be closed for good: build a new one after the cool-down.
                self._publisher = None
                with contextlib.suppress(Exception):
                    await publisher.close()
        else:
            self._fine()
        if confirmed:
            try:
                await store.mark_delivered(confirmed)
            except DeliveryError as exc:
                log.warning("inline mark failed (%s); the relay will re-send %d events", exc, len(confirmed))
                return 0
        with self._lock:
            self.published += len(confirmed)
        return len(confirmed)

    def close(self) -> None:
        async def shutdown() -> None:
            if self._publisher is not None:
                await self._publisher.close()
            if self._store is not None:
                await self._store.close()

        if self._thread.is_alive():
            # Let submitted publishes finish (they are short); what does not, the relay delivers.
            deadline = time.monotonic() + 10
            for future in list(self._inflight):
                with contextlib.suppress(Exception):
                    future.result(max(0.0, deadline - time.monotonic()))
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> InlinePublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
