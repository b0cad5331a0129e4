"""The relay loop: fetch -> publish (pipelined, per-key ordered) -> mark, with wake-ups and reconnects.

Correctness rests on three rules, each with a test:

* a row is marked only after its broker confirmation arrived (G3);
* per key, the next event is sent only after the previous one was confirmed (G5; see
  ``core.ordering``), so a failure never lets a later event overtake an earlier one;
* every fetch scans all pending rows from the lowest seq (no cursor, H1), and the next fetch starts
  only after the previous batch's marks committed, so nothing is skipped and nothing confirmed is
  re-sent unless a crash came between confirmation and mark (G6).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from outboxkit.brokers.base import Publisher
from outboxkit.core.backoff import backoff_delay
from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.ordering import KeyedDispatcher
from outboxkit.errors import (
    DeliveryError,
    PermanentError,
    SchemaError,
    TransientError,
    UnavailableError,
    UnroutableError,
)
from outboxkit.stores.base import Filter, OutboxStore

log = logging.getLogger("outboxkit.relay")


@dataclass(frozen=True)
class RelayConfig:
    batch_size: int = 2000  # rows per fetch
    window: int = 1000  # unconfirmed publishes at once (also bounds duplicates per crash, G6)
    poll_interval: float = 1.0  # fallback when no notification arrives
    retry_cap: float = 5.0  # longest backoff after broker/database trouble
    lock_retry: float = 1.0  # how often a standby relay retries the relay lock


@dataclass
class RelayStats:
    published: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


class _Marker:
    """Marks confirmed rows in the background, coalescing whatever accumulated during the last
    round trip into one UPDATE, so marking overlaps publishing instead of pausing it."""

    def __init__(self, store: OutboxStore) -> None:
        self.store = store
        self.buffer: list[int] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.error: BaseException | None = None

    def add(self, seq: int) -> None:
        self.buffer.append(seq)
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.buffer:
                if self.closing:
                    return
                await self.wake.wait()
                self.wake.clear()
                continue
            batch, self.buffer = self.buffer, []
            try:
                await self.store.mark_delivered(batch)
            except BaseException as exc:
                self.error = exc
                return

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def drain(self) -> None:
        """Wait until every added seq is marked; re-raise a mark failure."""
        self.closing = True
        self.wake.set()
        if self.task is not None:
            await self.task
        if self.error is not None:
            raise self.error


class Relay:
    """One relay over one store and one publisher. ``run(stop)`` until ``stop`` is set.

    ``store_factory`` and ``publisher_factory`` build fresh adapters: after an outage the relay
    throws the old ones away and builds new ones, which is simpler and safer than repairing them.
    """

    def __init__(
        self,
        store_factory: Callable[[], OutboxStore],
        publisher_factory: Callable[[], Publisher],
        config: RelayConfig | None = None,
    ) -> None:
        self.store_factory = store_factory
        self.publisher_factory = publisher_factory
        self.config = config or RelayConfig()
        self.stats = RelayStats()
        self._paused_topics: dict[str, float] = {}
        self._topic_failures: dict[str, int] = {}
        self._trouble = 0  # consecutive batches with transient failures
        self._last_error = ""
        self._rng = random.Random()

    # -- start-up ----------------------------------------------------------------------------------
    async def start(self) -> tuple[OutboxStore, Publisher]:
        """Open both sides once, raising ``UnavailableError``/``SchemaError`` for the CLI to report."""
        store = self.store_factory()
        try:
            await store.open()
        except BaseException:
            await store.close()
            raise
        publisher = self.publisher_factory()
        try:
            await publisher.connect()
        except BaseException:
            await store.close()
            await publisher.close()
            raise
        return store, publisher

    async def run(self, stop: asyncio.Event, *, first: tuple[OutboxStore, Publisher] | None = None) -> None:
        """Relay until ``stop`` is set; survives outages of either side (G8)."""
        pair = first
        outage_since: float | None = None
        attempt = 0
        while not stop.is_set():
            try:
                if pair is None:
                    pair = await self.start()
                if outage_since is not None:
                    log.warning("relay resumed after %.1fs", time.monotonic() - outage_since)
                    outage_since, attempt = None, 0
                await self._serve(pair[0], pair[1], stop)
            except SchemaError:
                raise
            except (UnavailableError, TransientError, OSError) as exc:
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.warning("relay paused: %s; retrying until it is back", exc)
                attempt += 1
            finally:
                if pair is not None and (stop.is_set() or outage_since is not None):
                    await _close(pair)
                    pair = None
            if outage_since is not None:
                await _sleep_or_stop(stop, backoff_delay(attempt, base=0.2, cap=self.config.retry_cap))
        if pair is not None:
            await _close(pair)

    # -- one connected session --------------------------------------------------------------------
    async def _serve(self, store: OutboxStore, publisher: Publisher, stop: asyncio.Event) -> None:
        waiting_logged = False
        while not await store.acquire_relay_lock():
            if not waiting_logged:
                log.warning("another relay holds this outbox; standing by")
                waiting_logged = True
            if await _sleep_or_stop(stop, self.config.lock_retry):
                return
        if waiting_logged:
            log.warning("took over the outbox")
        trouble_since: float | None = None
        while not stop.is_set():
            progressed = await self.run_batch(store, publisher)
            if self._trouble:
                if trouble_since is None:
                    trouble_since = time.monotonic()
                    log.warning("broker is not confirming publishes (%s); backing off", self._last_error)
                await _sleep_or_stop(stop, backoff_delay(self._trouble, base=0.1, cap=self.config.retry_cap))
                continue
            if trouble_since is not None:
                log.warning("broker confirms again after %.1fs", time.monotonic() - trouble_since)
                trouble_since = None
            if not progressed:
                await _wait_either(store.wait_for_new(self._idle_timeout()), stop)

    def _idle_timeout(self) -> float:
        now = time.monotonic()
        soonest = min(self._paused_topics.values(), default=now + self.config.poll_interval)
        return max(0.001, min(self.config.poll_interval, soonest - now))

    def _filter(self) -> Filter:
        now = time.monotonic()
        for topic, until in list(self._paused_topics.items()):
            if until <= now:
                del self._paused_topics[topic]
        return Filter(paused_topics=frozenset(self._paused_topics))

    async def run_batch(self, store: OutboxStore, publisher: Publisher) -> bool:
        """Fetch and publish one batch. Returns whether any row was fetched."""
        rows = await store.fetch_pending(self.config.batch_size, self._filter())
        if not rows:
            return False
        self.stats.batches += 1
        marker = _Marker(store)
        marker.start()
        failures: list[tuple[OutboxEvent, DeliveryError]] = []
        try:
            await self._pipeline(rows, publisher, marker, failures)
        finally:
            # Marks must be committed before the next fetch, or it would return them again.
            await marker.drain()
        transient = False
        for event, error in failures:
            transient |= await self._handle_failure(store, event, error)
        self._trouble = self._trouble + 1 if transient else 0
        return True

    async def _pipeline(
        self,
        rows: Sequence[OutboxEvent],
        publisher: Publisher,
        marker: _Marker,
        failures: list[tuple[OutboxEvent, DeliveryError]],
    ) -> None:
        dispatcher = KeyedDispatcher(rows)
        done: asyncio.Queue[tuple[OutboxEvent, BaseException | None]] = asyncio.Queue()

        def completion(event: OutboxEvent) -> Callable[[asyncio.Future[None]], None]:
            def callback(fut: asyncio.Future[None]) -> None:
                exc = fut.exception() if not fut.cancelled() else TransientError("cancelled")
                done.put_nowait((event, exc))

            return callback

        while not dispatcher.finished():
            for event in dispatcher.take(self.config.window - dispatcher.in_flight):
                fut = await publisher.publish(event)
                fut.add_done_callback(completion(event))
            event, exc = await done.get()
            while True:
                if exc is None:
                    dispatcher.confirmed(event)
                    marker.add(event.seq)
                    self.stats.published += 1
                    if self._topic_failures:
                        self._topic_failures.pop(event.topic, None)
                else:
                    dispatcher.failed(event)
                    error = exc if isinstance(exc, DeliveryError) else TransientError(repr(exc))
                    failures.append((event, error))
                if done.empty():
                    break
                event, exc = done.get_nowait()

    async def _handle_failure(self, store: OutboxStore, event: OutboxEvent, error: DeliveryError) -> bool:
        """Record a failed publish; returns True when it calls for a global backoff."""
        self.stats.failed_attempts += 1
        if isinstance(error, PermanentError):
            await store.record_failure(event.seq, str(error), dead=True)
            self.stats.dead_lettered += 1
            log.error("dead-lettered event %s (topic %s, key %s): %s", event.id, event.topic, event.key, error)
            return False
        if isinstance(error, UnroutableError):
            await store.record_failure(event.seq, str(error), dead=False)
            count = self._topic_failures.get(event.topic, 0) + 1
            self._topic_failures[event.topic] = count
            if event.topic not in self._paused_topics:
                delay = backoff_delay(count, base=0.5, cap=self.config.retry_cap, rng=self._rng)
                self._paused_topics[event.topic] = time.monotonic() + delay
                if count == 1 or count % 10 == 0:
                    log.error("%s; its events wait (not delivered), retrying in %.1fs", error, delay)
            return False
        self._last_error = str(error)
        log.debug("transient publish failure for %s: %s", event.id, error)
        return True


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> bool:
    """Sleep ``delay`` seconds; returns True early if ``stop`` was set."""
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        return False
    return True


async def _wait_either(waiter: Awaitable[None], stop: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(waiter), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close(pair: tuple[OutboxStore, Publisher]) -> None:
    store, publisher = pair
    await publisher.close()
    await store.close()
