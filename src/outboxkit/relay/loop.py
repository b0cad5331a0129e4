"""The relay loop: fetch -> publish (pipelined, per-key ordered) -> mark, with wake-ups and reconnects.

Correctness rests on these rules, each with a test:

* a row is marked only after its broker confirmation arrived (G3);
* per key, the next event is sent only after the previous one was confirmed (G5; see
  ``core.ordering``), so a failure never lets a later event overtake an earlier one;
* every fetch scans all pending rows from the lowest seq (no cursor, H1), leaving out the rows the
  relay holds in hand (in flight, or confirmed with their mark on its way), so nothing is skipped
  and nothing confirmed is re-sent unless a crash came between confirmation and mark (G6); fetch,
  publish and mark overlap (``relay.pipeline``), with no barrier between batches;
* no row and no exception stops the relay (H11, H12): a row that cannot become a message is
  dead-lettered with the reason; every failure is judged by ``core.retry`` — unavailable
  (reconnect, nothing counted), transient (counted, retried after the event's own backoff while
  only its key waits, dead letter after ``max_attempts``) or permanent (dead letter now);
* leases are kept by ``relay.leases.LeaseKeeper``: drained before they are released, trusted only
  until a deadline on this relay's own clock, and watched by every wait of the relay (H6, G8).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from outboxkit.brokers.base import Publisher
from outboxkit.core.backoff import backoff_delay
from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.retry import DEFAULT_MAX_ATTEMPTS, Outcome, Verdict, classify, judge
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    SchemaError,
    UnroutableError,
)
from outboxkit.relay.isolate import Casualties
from outboxkit.relay.leases import LeaseKeeper
from outboxkit.relay.observer import NullObserver, RelayObserver
from outboxkit.relay.pipeline import Session
from outboxkit.stores.base import DEFAULT_FETCH_MAX_BYTES, Filter, Leases, OutboxStore

log = logging.getLogger("outboxkit.relay")


@dataclass(frozen=True)
class RelayConfig:
    batch_size: int = 2000  # rows per fetch
    window: int = 1000  # unconfirmed publishes at once (also bounds duplicates per crash, G6)
    poll_interval: float = 1.0  # fallback when no notification arrives
    retry_cap: float = 2.0  # longest backoff between reconnects after an outage (also the worst extra wait after one)
    lease_ttl: float = 6.0  # a dead relay's buckets move to others within about 1.33 x this
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # failed attempts before an event is dead-lettered
    fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES  # payload bytes per fetch (plus one row)
    key_depth: int = 256  # events of one key in flight, on buses with Features.ordered_pipeline (else 1)
    owner: str | None = None  # this relay's name in the lease table (default host:pid:random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.key_depth < 1:
            raise ConfigurationError(f"key_depth must be at least 1, got {self.key_depth}")


@dataclass
class RelayStats:
    published: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    batches: int = 0
    fenced: int = 0  # confirmations not recorded because the lease was lost (re-sent by the new owner)
    handovers: int = 0  # buckets acquired from an expired or released lease
    outages: int = 0  # reconnects after the database or the broker was unavailable
    set_aside: int = 0  # inputs whose dead letter could not be stored either: skipped in memory (H13)
    started: float = field(default_factory=time.monotonic)


class Relay:
    """One relay over one store and one publisher. ``run(stop)`` until ``stop`` is set.

    ``store_factory`` and ``publisher_factory`` build fresh adapters: after an outage the relay
    throws the old ones away and builds new ones, which is simpler and safer than repairing them
    (a client that closed itself for good is replaced the same way).
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
        # seq -> (monotonic time of its next attempt, key): events waiting for their retry (H12).
        self._retry_at: dict[int, tuple[float, str | None]] = {}
        self._rng = random.Random()
        self.owner = self.config.owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.keeper: LeaseKeeper | None = None
        self._outage_since: float | None = None
        self._attempt = 0  # consecutive failed sessions: the reconnect backoff grows with it
        # What this relay set aside, and its watch over fetches that fail the same way (H13).
        self.casualties = Casualties(self)

    @property
    def outage_since(self) -> float | None:
        """Monotonic time the current outage began, or None while the relay works (the fleet's
        status reads it)."""
        return self._outage_since

    @property
    def leases(self) -> Leases:
        return self.keeper.leases if self.keeper is not None else {}

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
        """Relay until ``stop`` is set; survives outages of either side and any exception (G8, H12)."""
        pair = first
        self._outage_since = None
        self._attempt = 0
        started = first is not None
        while not stop.is_set():
            failed = False
            try:
                if pair is None:
                    pair = await self.start()
                    started = True
                await self._serve(pair[0], pair[1], stop)
            except Exception as exc:
                # Unavailable, transient, an exception nobody classified (H12) — or, once running,
                # a schema or configuration problem that appeared later (a table re-created by a
                # migration, an exchange re-declared with other settings): this connection pair
                # cannot go on. Rebuild both after a backoff; nothing is counted against an event,
                # and the process stays up. Start-up stays strict: one line, non-zero exit.
                if isinstance(exc, SchemaError | ConfigurationError) and not started:
                    raise
                failed = True
                self.observer.set_leases(0)  # leases lapse with the connection; /readyz goes stale by itself
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    self.stats.outages += 1
                    if isinstance(exc, SchemaError | ConfigurationError):
                        log.error("relay paused: %s; retrying until it is fixed", exc)
                    elif isinstance(exc, DeliveryError | OSError):
                        log.warning("relay paused: %s; retrying until it is back", exc)
                    else:
                        log.error("relay paused by an unexpected error; retrying", exc_info=exc)
                self._attempt += 1
            finally:
                if pair is not None and (stop.is_set() or failed):
                    await _close(pair)
                    pair = None
            if failed:
                await _sleep_or_stop(stop, backoff_delay(self._attempt, base=0.2, cap=self.config.retry_cap))
        if pair is not None:
            await _close(pair)

    def healthy(self) -> None:
        """A session fetched successfully: an outage, if there was one, is over. (Connecting is not
        enough: a relay whose table is missing connects, then fails at its first fetch, and its
        backoff must keep growing instead of restarting at every reconnect.)"""
        if self._outage_since is not None:
            log.warning("relay resumed after %.1fs", time.monotonic() - self._outage_since)
            self._outage_since, self._attempt = None, 0

    # -- one connected session --------------------------------------------------------------------
    async def _serve(self, store: OutboxStore, publisher: Publisher, stop: asyncio.Event) -> None:
        keeper = self.keeper = LeaseKeeper(store, self.owner, self.config.lease_ttl, self.observer)
        handovers = keeper.handovers
        await keeper.start()
        if self.casualties.faults.suspect and keeper.usable():
            # The last fetches failed the same way: find the row at fault before fetching again.
            await keeper.guard(self.casualties.narrow_down(store, keeper.for_fetch()))
        session = Session(self, store, publisher, keeper, stop)
        keeper.on_change = session.leases_changed
        try:
            await session.run()
        finally:
            self.stats.handovers += keeper.handovers - handovers
            await keeper.stop(release=stop.is_set())

    def _idle_timeout(self) -> float:
        now = time.monotonic()
        waits = [until for until in self._paused_topics.values()]
        waits += [until for until, _ in self._retry_at.values()]
        soonest = min(waits, default=now + self.config.poll_interval)
        return max(0.001, min(self.config.poll_interval, soonest - now))

    def _filter(self) -> Filter:
        now = time.monotonic()
        for topic, until in list(self._paused_topics.items()):
            if until <= now:
                del self._paused_topics[topic]
        # Keys of inputs set aside (H13) wait behind them, like the keys of events in backoff.
        aside = self.casualties.aside.keys
        if not self._retry_at:
            return Filter(paused_topics=frozenset(self._paused_topics), held_keys=aside)
        keys: set[str] = set(aside)
        seqs: set[int] = set()
        for seq, (until, key) in list(self._retry_at.items()):
            if until <= now:
                del self._retry_at[seq]
            elif key is not None:
                keys.add(key)
            else:
                seqs.add(seq)
        paused = frozenset(self._paused_topics)
        return Filter(paused_topics=paused, held_keys=frozenset(keys), held_seqs=frozenset(seqs))

    async def _record(
        self, store: OutboxStore, event: OutboxEvent, exc: BaseException, leases: Leases | None, *, during_outage: bool
    ) -> None:
        """Judge one failed attempt (``core.retry``) and record it on the row."""
        error = classify(exc)
        self.observer.failed(
            "unroutable"
            if isinstance(error, UnroutableError)
            else "permanent"
            if isinstance(error, PermanentError)
            else "transient"
        )
        verdict = judge(error, event.attempts, self.config.max_attempts, rng=self._rng)
        if verdict.outcome is Outcome.RECONNECT or (during_outage and verdict.outcome is Outcome.RETRY):
            # The broker was unavailable during this batch: a timeout beside it is the outage's
            # doing, not the event's. Nothing is counted; the relay reconnects.
            return
        self.stats.failed_attempts += 1
        if verdict.outcome is Outcome.DEAD:
            self._retry_at.pop(event.seq, None)
            if not await store.record_failure(event.seq, str(verdict.error), dead=True, leases=leases):
                return  # fenced: no longer ours
            self.stats.dead_lettered += 1
            self.observer.dead_lettered()
            log.error("dead-lettered event %s (topic %s, key %s): %s", event.id, event.topic, event.key, verdict.error)
            return
        if not await store.record_failure(event.seq, str(verdict.error), dead=False, leases=leases):
            return
        self._retry_later(event, verdict)

    def _retry_later(self, event: OutboxEvent, verdict: Verdict) -> None:
        now = time.monotonic()
        self._retry_at[event.seq] = (now + verdict.delay, event.key)
        tried = event.attempts + 1
        if isinstance(verdict.error, UnroutableError):
            # Unroutable is about the topic, not the event: pause the topic so its other events
            # wait too, instead of each failing the same way.
            count = self._topic_failures.get(event.topic, 0) + 1
            self._topic_failures[event.topic] = count
            if event.topic not in self._paused_topics:
                delay = backoff_delay(count, base=0.5, cap=self.config.retry_cap, rng=self._rng)
                self._paused_topics[event.topic] = now + delay
                if count == 1 or count % 10 == 0:
                    log.error("%s; its events wait (not delivered), retrying in %.1fs", verdict.error, delay)
            return
        level = logging.WARNING if tried == 1 or tried % 5 == 0 else logging.DEBUG
        log.log(
            level,
            "publish of event %s (topic %s, key %s) failed, attempt %d of %d: %s; retrying in %.1fs",
            event.id,
            event.topic,
            event.key,
            tried,
            self.config.max_attempts,
            verdict.error,
            verdict.delay,
        )


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> bool:
    """Sleep ``delay`` seconds; returns True early if ``stop`` was set."""
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        return False
    return True


async def _first_of(*waiters: Awaitable[object]) -> None:
    """Return when the first of ``waiters`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waiters]
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
