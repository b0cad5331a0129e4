"""One connected session of a relay: fetching, publishing and marking run side by side, with no
barrier between batches.

How it stays correct without the barrier (each rule has a test):

* **In hand.** Every fetched row stays "in hand" until its mark committed, its failure was recorded,
  or it was withdrawn. Fetches leave the rows in hand out (in SQL), so a row is never sent twice
  while its first copy is in flight or its mark is on its way (G6) — and every fetch still starts
  from the lowest pending seq, so a late commit is found (H1).
* **One dispatcher for the session.** Fetches append to it; per key the next event is handed out
  only after the previous one was confirmed (G5), across fetches too.
* **Blocked keys.** When an event fails, its key is blocked until its failure is recorded (retry
  time or dead letter) *and* a fetch issued after that completed: a fetch already on its way could
  otherwise bring the key's later events back and let them overtake the failed one.
* **Leases.** Rows of buckets this relay no longer holds (or holds again at another epoch) are
  withdrawn at once (the new owner sends them); surplus buckets take no new rows and are released
  once none of their rows is in hand; nothing is published while the leases are not trusted (``LeaseKeeper.usable``).
* **Outage.** An unavailable broker stops the taking; the session waits for what is in flight,
  then ends with the error so the relay reconnects (nothing counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from outboxkit.brokers.base import Publisher
from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.isolate import signature
from outboxkit.core.leases import stale
from outboxkit.core.ordering import KeyedDispatcher
from outboxkit.core.retry import classify
from outboxkit.errors import PermanentError, TransientError, UnavailableError
from outboxkit.relay.isolate import is_outage
from outboxkit.relay.leases import LeaseKeeper
from outboxkit.relay.marker import Marker
from outboxkit.stores.base import OutboxStore

if TYPE_CHECKING:
    from outboxkit.relay.loop import Relay

_FOREVER = 1 << 62
_NOT_SENT = TransientError("not sent: an earlier event of its key failed first")
log = logging.getLogger("outboxkit.relay")


class Session:
    def __init__(
        self, relay: Relay, store: OutboxStore, publisher: Publisher, keeper: LeaseKeeper, stop: asyncio.Event
    ) -> None:
        self.relay = relay
        self.config = relay.config
        self.store = store
        self.publisher = publisher
        self.keeper = keeper
        self.stop = stop
        self.kick = asyncio.Event()
        # Several events of a key in flight only where the bus keeps them in order even across a
        # failure (see core.ordering); one at a time everywhere else.
        depth = self.config.key_depth if getattr(publisher.features, "ordered_pipeline", False) else 1
        self.dispatcher = KeyedDispatcher(depth=depth)
        self.in_hand: dict[int, OutboxEvent] = {}
        self.per_bucket: Counter[int] = Counter()
        self.done: deque[tuple[OutboxEvent, BaseException | None, float]] = deque()
        self.fetching: asyncio.Task[Sequence[OutboxEvent]] | None = None
        self.waker: asyncio.Task[None] | None = None
        self.fetches = 0  # fetches issued; they run one at a time, so they also complete in order
        self.blocked: dict[str, int] = {}  # key -> the fetch that must complete before it flows again
        self.recording: set[asyncio.Task[None]] = set()
        self.error: BaseException | None = None
        self.outage: UnavailableError | None = None
        self.more = True  # the last fetch was full: fetch again without waiting for a wake-up
        self.woken = False
        # The epochs the rows in hand were fetched under, and those of the fetch on its way: a row
        # of a bucket since lost, or held again at another epoch, is not published (core.leases.stale).
        self.epochs: dict[int, int] = dict(keeper.leases)
        self.fetched_under: dict[int, int] = {}
        casualties = relay.casualties
        self.marker = Marker(
            store,
            lambda: keeper.leases,
            relay.observer,
            self._fenced,
            self._marked,
            lambda seqs, leases, exc: casualties.mark_one_by_one(store, seqs, leases, exc),
        )

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        stopper = asyncio.ensure_future(self.stop.wait())
        stopper.add_done_callback(self._wake)
        self.marker.start(self._wake)
        try:
            while True:
                self.kick.clear()
                if self.error is not None:
                    raise self.error
                if self.marker.failed is not None:
                    raise self.marker.failed
                self.keeper.check()
                self._take_results()
                if self.stop.is_set() or self.outage is not None:
                    if self.dispatcher.in_flight == 0 and not self.recording:
                        break
                else:
                    self._release_drained()
                    self._maybe_fetch()
                    await self._publish()
                    self._maybe_wait_for_new()
                if self.done or self.kick.is_set():
                    continue
                await self.kick.wait()
        except BaseException:
            await self._abandon()
            stopper.cancel()
            raise
        stopper.cancel()
        await self._finish()
        if self.outage is not None:
            raise self.outage

    def _wake(self, *_: object) -> None:
        self.kick.set()

    async def _finish(self) -> None:
        """Clean end (stop or outage, nothing in flight): cancel the fetch, commit the marks."""
        for task in (self.fetching, self.waker):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.marker.drain()

    async def _abandon(self) -> None:
        """The session failed: the store is about to be closed, so do not wait for it."""
        for task in (self.fetching, self.waker, *self.recording):
            if task is not None:
                task.cancel()
        await self.marker.abort()

    # -- fetching ----------------------------------------------------------------------------------
    def _maybe_fetch(self) -> None:
        if self.fetching is not None or not (self.more or self.woken):
            return
        if not self.keeper.usable() or self.dispatcher.waiting >= self.config.window:
            return
        leases = self.keeper.for_fetch()
        if not leases:
            return
        self.woken = False
        if self.waker is not None:
            self.waker.cancel()
            self.waker = None
        self.fetches += 1
        self.fetched_under = leases
        task = asyncio.ensure_future(
            self.store.fetch_pending(
                self.config.batch_size,
                self.relay._filter(),
                leases,
                max_bytes=self.config.fetch_max_bytes,
                # Rows in hand, and rows set aside because even their dead letter failed (H13).
                exclude=[*self.in_hand, *self.relay.casualties.aside.seqs],
            )
        )
        task.add_done_callback(self._wake)
        self.fetching = task

    def _maybe_wait_for_new(self) -> None:
        """While no fetch is due, listen for new rows (notification, data_version, poll timeout)."""
        if self.fetching is not None or self.more or self.woken or self.waker is not None:
            return
        self.waker = asyncio.ensure_future(self.store.wait_for_new(self.relay._idle_timeout()))
        self.waker.add_done_callback(self._woke)

    def _woke(self, task: asyncio.Task[None]) -> None:
        if task is self.waker:
            self.waker = None
            if not task.cancelled():
                if task.exception() is not None:
                    self.error = task.exception()
                self.woken = True
        self.kick.set()

    def _fetched(self, rows: Sequence[OutboxEvent]) -> None:
        observer = self.relay.observer
        observer.db_ok()
        self.relay.healthy()
        self.relay.casualties.fetch_ok()
        if not rows:
            if not self.in_hand:
                observer.broker_ok()  # nothing waits on the broker: idle is healthy
            self.more = False
        else:
            self.relay.stats.batches += 1
            self.more = len(rows) >= self.config.batch_size
        done_through = self.fetches
        for key, after in list(self.blocked.items()):
            if after <= done_through:
                del self.blocked[key]
        held = self.keeper.leases
        fresh = [
            e
            for e in rows
            if e.seq not in self.in_hand
            and (e.key is None or e.key not in self.blocked)
            and (e.bucket is None or (e.bucket in held and held[e.bucket] == self.fetched_under.get(e.bucket)))
        ]
        for event in fresh:
            self._hold(event)
        self.dispatcher.add(fresh)

    # -- in hand -----------------------------------------------------------------------------------
    def _hold(self, event: OutboxEvent) -> None:
        self.in_hand[event.seq] = event
        if event.bucket is not None:
            self.per_bucket[event.bucket] += 1

    def _let_go(self, seq: int) -> None:
        event = self.in_hand.pop(seq, None)
        if event is not None and event.bucket is not None:
            self.per_bucket[event.bucket] -= 1
            if self.per_bucket[event.bucket] <= 0:
                del self.per_bucket[event.bucket]

    def _marked(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._let_go(seq)
        self.kick.set()

    def _fenced(self, count: int) -> None:
        self.relay.stats.fenced += count
        self.keeper.doubt()

    def leases_changed(self) -> None:
        """Called by the keeper: withdraw what we hold of buckets no longer ours at the epoch we
        fetched it under."""
        held = self.keeper.leases
        gone = stale(self.epochs, held)
        self.epochs = dict(held)
        for event in self.dispatcher.withdraw(
            lambda e: e.bucket is not None and (e.bucket in gone or e.bucket not in held)
        ):
            self._let_go(event.seq)
        self.kick.set()

    def _release_drained(self) -> None:
        surplus = self.keeper.surplus
        if surplus:
            drained = {b for b in surplus if not self.per_bucket.get(b)}
            if drained:
                self.keeper.drained(drained)

    # -- publishing --------------------------------------------------------------------------------
    async def _publish(self) -> None:
        if not self.keeper.usable():
            return
        room = self.config.window - self.dispatcher.in_flight
        if room <= 0:
            return
        publisher, done, kick = self.publisher, self.done, self.kick

        def completion(event: OutboxEvent, sent: float) -> Callable[[asyncio.Future[None]], None]:
            def callback(fut: asyncio.Future[None]) -> None:
                exc = fut.exception() if not fut.cancelled() else TransientError("publish cancelled")
                # Latency is taken here, when the confirmation arrives, not when the loop gets
                # round to it: queueing behind other confirmations is not the broker's time.
                done.append((event, exc, time.monotonic() - sent))
                kick.set()

            return callback

        stopped: set[object] = set()  # keys whose event failed at once in this round
        for event in self.dispatcher.take(room):
            key = event.key if event.key is not None else event.seq
            if key in stopped:
                # An earlier event of its key failed before it went out: it must not go either.
                done.append((event, _NOT_SENT, 0.0))
                continue
            if event.defect is not None:
                # A row another program wrote that cannot become a message (H11).
                done.append((event, PermanentError(event.defect), 0.0))
                stopped.add(key)
                continue
            sent = time.monotonic()
            try:
                fut = await publisher.publish(event)
            except Exception as raised:  # adapters fail the future; a raise is judged the same
                done.append((event, raised, 0.0))
                stopped.add(key)
                continue
            if fut.done():
                # Answered at once (refused: too large, client closed): settle it now, in order,
                # so a later event of its key taken in this round is seen to follow a failure.
                exc = fut.exception() if not fut.cancelled() else TransientError("publish cancelled")
                done.append((event, exc, 0.0))
                if exc is not None:
                    stopped.add(key)
                continue
            fut.add_done_callback(completion(event, sent))

    def _take_results(self) -> None:
        fetching = self.fetching
        if fetching is not None and fetching.done():
            self.fetching = None
            error = fetching.exception() if not fetching.cancelled() else None
            if error is not None:
                # A failed fetch ends the session (reconnect); twice the same way, and the next
                # session narrows it down to the row at fault first (H13).
                self.relay.casualties.fetch_failed(error)
            self._fetched(fetching.result())
        relay, stats, observer = self.relay, self.relay.stats, self.relay.observer
        dispatcher, marker, done = self.dispatcher, self.marker, self.done
        while done:
            event, exc, latency = done.popleft()
            if dispatcher.orphan(event):
                self._orphan(event, exc)
                continue
            if exc is None:
                dispatcher.confirmed(event)
                marker.add(event.seq)
                stats.published += 1
                observer.published(event, latency)
                if relay._topic_failures:
                    relay._topic_failures.pop(event.topic, None)
                if relay._retry_at:
                    relay._retry_at.pop(event.seq, None)
                continue
            # Later events of the key leave the dispatcher: they are retried behind this one (G5).
            rest = dispatcher.failed(event)
            error = classify(exc)
            if isinstance(error, UnavailableError) and self.outage is None:
                self.outage = error
            if event.key is not None:
                self.blocked[event.key] = _FOREVER
            task = asyncio.ensure_future(self._record(event, exc, rest))
            self.recording.add(task)
            task.add_done_callback(self._recorded)

    def _orphan(self, event: OutboxEvent, exc: BaseException | None) -> None:
        """An event in flight whose key failed meanwhile (several in flight: ordered_pipeline)."""
        self.dispatcher.settle_orphan(event)
        if exc is None:
            # Written after an earlier event of its key failed: the bus broke its ordered_pipeline
            # promise. It is delivered (so marked), and said loudly.
            log.error("event %s of key %s was written after an earlier event of the key failed", event.id, event.key)
            self.marker.add(event.seq)
            self.relay.stats.published += 1
        else:
            # Never sent, or failed with the key: it is fetched again behind the failed one.
            self._let_go(event.seq)

    async def _record(self, event: OutboxEvent, exc: BaseException, rest: list[OutboxEvent]) -> None:
        relay = self.relay
        try:
            await relay._record(self.store, event, exc, self.keeper.leases, during_outage=self.outage is not None)
        except Exception as failed:
            if is_outage(failed):
                raise
            # Recording the failure failed on this row (a key an index refuses, ...): it must not
            # fail the session, or the row would be fetched and fail again forever (H13). Its dead
            # letter by seq alone, or, failing that too, set aside in memory.
            reason = f"{classify(exc)}; recording it failed: {signature(failed)}"
            await relay.casualties.dead_letter(self.store, event.seq, event.key, reason, self.keeper.leases)
        for e in (event, *rest):
            self._let_go(e.seq)
        if event.key is not None:
            # Fetches issued from now on leave the key out in SQL (held, dead, or flowing again under
            # the skip policy); the next one to complete proves no earlier fetch can bring it back.
            self.blocked[event.key] = self.fetches + 1

    def _recorded(self, task: asyncio.Task[None]) -> None:
        self.recording.discard(task)
        if not task.cancelled() and task.exception() is not None and self.error is None:
            self.error = task.exception()
        self.kick.set()
