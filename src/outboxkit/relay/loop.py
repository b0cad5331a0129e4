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
import contextlib
import logging
import os
import random
import socket
import time
import uuid
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
from outboxkit.relay.observer import NullObserver, RelayObserver
from outboxkit.stores.base import Filter, Leases, OutboxStore

log = logging.getLogger("outboxkit.relay")


@dataclass(frozen=True)
class RelayConfig:
    batch_size: int = 2000  # rows per fetch
    window: int = 1000  # unconfirmed publishes at once (also bounds duplicates per crash, G6)
    poll_interval: float = 1.0  # fallback when no notification arrives
    retry_cap: float = 5.0  # longest backoff after broker/database trouble
    lease_ttl: float = 6.0  # a dead relay's buckets move to others within about 1.33 x this
    max_attempts: int = 0  # failed attempts before an unroutable event is dead-lettered (0: never)
    owner: str | None = None  # this relay's name in the lease table (default host:pid:random)


@dataclass
class RelayStats:
    published: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    batches: int = 0
    fenced: int = 0  # confirmations not recorded because the lease was lost (re-sent by the new owner)
    handovers: int = 0  # buckets acquired from an expired or released lease
    started: float = field(default_factory=time.monotonic)


class _Marker:
    """Marks confirmed rows in the background, coalescing whatever accumulated during the last
    round trip into one UPDATE, so marking overlaps publishing instead of pausing it."""

    def __init__(self, store: OutboxStore, leases: Leases, stats: RelayStats, observer: RelayObserver) -> None:
        self.store = store
        self.leases = leases
        self.stats = stats
        self.observer = observer
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
                marked = await self.store.mark_delivered(batch, self.leases)
            except BaseException as exc:
                self.error = exc
                return
            self.observer.db_ok()
            if marked < len(batch):
                # Fenced: our lease on some bucket ended (paused past the TTL, or rebalanced). The
                # new owner publishes those rows again; consumers de-duplicate by id.
                self.stats.fenced += len(batch) - marked
                self.observer.fenced(len(batch) - marked)

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
        observer: RelayObserver | None = None,
    ) -> None:
        self.store_factory = store_factory
        self.publisher_factory = publisher_factory
        self.config = config or RelayConfig()
        self.stats = RelayStats()
        self.observer: RelayObserver = observer or NullObserver()
        self._paused_topics: dict[str, float] = {}
        self._topic_failures: dict[str, int] = {}
        self._trouble = 0  # consecutive batches with transient failures
        self._last_error = ""
        self._rng = random.Random()
        self.owner = self.config.owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.leases: dict[int, int] = {}
        self._leases_changed = asyncio.Event()

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
                self.observer.set_leases(0)  # leases lapse with the connection; /readyz goes stale by itself
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
        self.leases = await store.maintain_leases(self.owner, {}, self.config.lease_ttl, rebalance=True)
        self._leases_seen(self.leases)
        keeper = asyncio.create_task(self._keep_leases(store))
        standby_logged = False
        trouble_since: float | None = None
        try:
            while not stop.is_set():
                if keeper.done():
                    keeper.result()  # re-raise the keeper's failure (database gone): reconnect
                if not self.leases:
                    if not standby_logged:
                        log.warning("no bucket free for relay %s (others hold them); standing by", self.owner)
                        standby_logged = True
                    self._leases_changed.clear()
                    await _wait_either(self._leases_changed.wait(), stop)
                    continue
                if standby_logged:
                    log.warning("relay %s now holds %d buckets", self.owner, len(self.leases))
                    standby_logged = False
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
                    self._leases_changed.clear()
                    await _wait_either(store.wait_for_new(self._idle_timeout()), stop, self._leases_changed)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            if stop.is_set():
                # Clean exit: hand the buckets over now instead of after the TTL.
                with contextlib.suppress(DeliveryError, OSError):
                    await store.release_leases(self.owner)
                self.leases = {}

    async def _keep_leases(self, store: OutboxStore) -> None:
        """Renew, rebalance and take over leases every third of the TTL, beside the batches, so a
        long batch never lets a lease lapse."""
        while True:
            await asyncio.sleep(self.config.lease_ttl / 3)
            before = self.leases
            held = await store.maintain_leases(self.owner, before, self.config.lease_ttl, rebalance=True)
            self._leases_seen(held)
            gained = held.keys() - before.keys()
            lost = before.keys() - held.keys()
            if gained or lost:
                self.stats.handovers += len(gained)
                if gained:
                    self.observer.handover(len(gained))
                log.info("relay %s leases: +%d -%d, now %d", self.owner, len(gained), len(lost), len(held))
                self._leases_changed.set()
            self.leases = held

    def _leases_seen(self, held: Leases) -> None:
        """A lease round trip succeeded. A relay standing by (no bucket) has nothing to send, so
        it counts as fine on the broker side too, as an idle relay does."""
        self.observer.db_ok()
        self.observer.set_leases(len(held))
        if not held:
            self.observer.broker_ok()

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
        leases = dict(self.leases)  # the epochs in force for this batch fence its marks
        rows = await store.fetch_pending(self.config.batch_size, self._filter(), leases)
        self.observer.db_ok()
        if not rows:
            self.observer.broker_ok()  # nothing waits on the broker: idle is healthy
            return False
        self.stats.batches += 1
        marker = _Marker(store, leases, self.stats, self.observer)
        marker.start()
        failures: list[tuple[OutboxEvent, DeliveryError]] = []
        try:
            await self._pipeline(rows, publisher, marker, failures)
        finally:
            # Marks must be committed before the next fetch, or it would return them again.
            await marker.drain()
        transient = False
        for event, error in failures:
            transient |= await self._handle_failure(store, event, error, leases)
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
        done: asyncio.Queue[tuple[OutboxEvent, BaseException | None, float]] = asyncio.Queue()
        observer = self.observer

        def completion(event: OutboxEvent, sent: float) -> Callable[[asyncio.Future[None]], None]:
            def callback(fut: asyncio.Future[None]) -> None:
                exc = fut.exception() if not fut.cancelled() else TransientError("cancelled")
                # Latency is taken here, when the confirmation arrives, not when the loop gets
                # round to it: queueing behind other confirmations is not the broker's time.
                done.put_nowait((event, exc, time.monotonic() - sent))

            return callback

        while not dispatcher.finished():
            for event in dispatcher.take(self.config.window - dispatcher.in_flight):
                sent = time.monotonic()
                fut = await publisher.publish(event)
                fut.add_done_callback(completion(event, sent))
            event, exc, latency = await done.get()
            while True:
                if exc is None:
                    dispatcher.confirmed(event)
                    marker.add(event.seq)
                    self.stats.published += 1
                    observer.published(event, latency)
                    if self._topic_failures:
                        self._topic_failures.pop(event.topic, None)
                else:
                    dispatcher.failed(event)
                    error = exc if isinstance(exc, DeliveryError) else TransientError(repr(exc))
                    failures.append((event, error))
                if done.empty():
                    break
                event, exc, latency = done.get_nowait()

    async def _handle_failure(
        self, store: OutboxStore, event: OutboxEvent, error: DeliveryError, leases: Leases
    ) -> bool:
        """Record a failed publish; returns True when it calls for a global backoff."""
        self.stats.failed_attempts += 1
        # The kind the broker reported, before max_attempts turns an unroutable event permanent.
        self.observer.failed(
            "unroutable"
            if isinstance(error, UnroutableError)
            else "permanent"
            if isinstance(error, PermanentError)
            else "transient"
        )
        limit = self.config.max_attempts
        if isinstance(error, UnroutableError) and limit and event.attempts + 1 >= limit:
            error = PermanentError(f"gave up after {event.attempts + 1} attempts: {error}")
        if isinstance(error, PermanentError):
            if not await store.record_failure(event.seq, str(error), dead=True, leases=leases):
                return False  # fenced: no longer ours
            self.stats.dead_lettered += 1
            self.observer.dead_lettered()
            log.error("dead-lettered event %s (topic %s, key %s): %s", event.id, event.topic, event.key, error)
            return False
        if isinstance(error, UnroutableError):
            await store.record_failure(event.seq, str(error), dead=False, leases=leases)

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


async def _wait_either(waiter: Awaitable[object], stop: asyncio.Event, *more: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(waiter), asyncio.ensure_future(stop.wait())]
    tasks += [asyncio.ensure_future(event.wait()) for event in more]
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
