"""The log-tailing relay (``--capture wal``): committed transactions from a replication slot -> bus.

Rules, each with a test:

* the slot's confirmed position moves only past transactions whose every event the broker
  confirmed or that were dead-lettered (G3): peek -> publish -> await confirmations -> mark the
  outbox rows delivered -> advance. A crash anywhere re-reads from the slot: nothing is lost (G1),
  duplicates are bounded by one peek (G6), rolled-back transactions are never decoded (G2);
* per key, events go out in commit order, the next only after the previous is confirmed
  (``core.ordering.KeyedDispatcher``, G5) — the same rule as the table relay;
* one reader per slot (the database's log capture): a standby waits for the slot's lock and takes over
  when the holder's session ends; the holder stops publishing as soon as it cannot be sure it still
  holds the lock (``reader.trusted()``), so a paused relay that wakes up publishes nothing (H6);
* a row or message that cannot become a message, or that the broker refuses for good, is a dead
  letter (H11, H5: later events of its key are held as dead letters too, unless ``hold_dead_keys``
  is off); every exception is classed (H12): unavailable -> reconnect, transient -> retried with
  the event's own backoff while its key waits, permanent -> dead letter;
* one input, one casualty (H13): traffic that is not ours (other tables, other prefixes,
  non-transactional messages) moves the position on like any finished transaction; an input that
  raises while it becomes a message, is published or is dead-lettered is set aside with its reason
  (a dead letter; a bounded record in ``set_aside`` where even that cannot be stored) and the
  position moves past it; a round that fails twice the same way is narrowed down to the input at
  fault (``core.isolate.Narrowing``) and that input is set aside (``relay/isolate.py``, as on the
  table relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace

from outboxkit.brokers.base import Publisher
from outboxkit.core.backoff import backoff_delay
from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.isolate import Narrowing, signature
from outboxkit.core.logfmt import LIFE_LOGGER
from outboxkit.core.ordering import KeyedDispatcher
from outboxkit.core.retry import Outcome, classify, judge
from outboxkit.core.storable import storable
from outboxkit.core.tailing import Transaction
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    PositionLostError,
    SchemaError,
    TransientError,
    UnavailableError,
)
from outboxkit.relay.isolate import TailCasualties
from outboxkit.relay.loop import RelayConfig, RelayStats
from outboxkit.relay.observer import NullObserver, RelayObserver
from outboxkit.relay.tailbase import TailDecoder, TailReader, waits_in_peek
from outboxkit.stores.base import OutboxStore, TableRef

log = logging.getLogger("outboxkit.relay")
# Holding or waiting for the slot is shown at the default level, like the start line.
life_log = logging.getLogger(LIFE_LOGGER)


class TailRelay:
    """One log-tailing relay over one slot and one publisher. ``run(stop)`` until ``stop`` is set.

    Built by :func:`build_tail_relay`. ``store_factory`` is only for the backlog probe of
    ``/metrics`` and the summaries (outbox rows not yet marked); the relay itself reads the slot."""

    def __init__(
        self,
        reader_factory: Callable[[], TailReader],
        publisher_factory: Callable[[], Publisher],
        decoder_factory: Callable[[], TailDecoder],
        config: RelayConfig | None = None,
        observer: RelayObserver | None = None,
        *,
        hold_dead_keys: bool = True,
        store_factory: Callable[[], OutboxStore],
    ) -> None:
        self.reader_factory = reader_factory
        self.publisher_factory = publisher_factory
        self.decoder_factory = decoder_factory
        self.store_factory = store_factory
        self.config = config or RelayConfig()
        self.observer: RelayObserver = observer or NullObserver()
        self.hold_dead_keys = hold_dead_keys
        self.stats = RelayStats()
        self.active = False  # holds the slot's lock now
        self.lag_seconds: float | None = None  # age of the last transaction done while behind; 0 caught up
        self.lag_bytes: int | None = None  # WAL the slot retains (server position - confirmed), H4
        self._lag_checked = 0.0
        self._rng = random.Random()
        self.dead = TailCasualties(self.stats, self.observer, hold_dead_keys=hold_dead_keys)
        self.narrowing = Narrowing(3 * self.config.batch_size)

    @property
    def set_aside(self) -> list[str]:
        """Inputs set aside without a dead letter (bounded; each also logged at ERROR and counted
        in ``stats.set_aside``)."""
        return self.dead.records

    async def start(self) -> tuple[TailReader, Publisher]:
        """Open both sides once, raising ``UnavailableError``/``SchemaError`` for the CLI to report."""
        reader = self.reader_factory()
        try:
            await reader.connect()
        except BaseException:
            await reader.close()
            raise
        publisher = self.publisher_factory()
        try:
            await publisher.connect()
        except BaseException:
            await reader.close()
            await publisher.close()
            raise
        return reader, publisher

    async def run(self, stop: asyncio.Event, *, first: tuple[TailReader, Publisher] | None = None) -> None:
        """Relay until ``stop`` is set; survives outages of either side and any exception (G8, H12)."""
        pair = first
        attempt = 0
        outage_since: float | None = None
        while not stop.is_set():
            failed = False
            try:
                if pair is None:
                    pair = await self.start()
                if await self._wait_for_lock(pair[0], stop):
                    if outage_since is not None:
                        log.warning("relay resumed after %.1fs", time.monotonic() - outage_since)
                        outage_since, attempt = None, 0
                    await self._serve(pair[0], pair[1], stop)
            except Exception as exc:
                if isinstance(exc, SchemaError | ConfigurationError) and first is None and self.stats.batches == 0:
                    raise
                if isinstance(exc, PositionLostError):
                    raise  # the log the reader needs is gone: waiting cannot bring it back
                failed = True
                suspect = pair is not None and _input_fault(exc)
                if suspect and pair is not None:
                    # Maybe an input at fault: the same failure twice narrows the next rounds down.
                    self.narrowing.failed(pair[0].resume_point(), signature(exc))
                self.active = False
                self.observer.set_leases(0)
                if outage_since is None:
                    outage_since = time.monotonic()
                    self.stats.outages += 1
                    if isinstance(exc, DeliveryError | OSError):
                        log.warning("relay paused: %s; retrying until it is back", exc)
                    else:
                        log.error("relay paused by an unexpected error; retrying", exc_info=exc)
                attempt += 1
            finally:
                if pair is not None and (stop.is_set() or failed):
                    await _close(pair)
                    pair = None
            if failed:
                # Narrowing reads again at once (briefly paused): the input, not a service, is down.
                pause = 0.05 if self.narrowing.narrowed else backoff_delay(attempt, base=0.2, cap=self.config.retry_cap)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
        if pair is not None:
            await _close(pair)

    async def _wait_for_lock(self, reader: TailReader, stop: asyncio.Event) -> bool:
        """Standby until the slot's lock is ours (one reader per slot); False if stopped first."""
        waited = False
        while not stop.is_set():
            if await reader.try_lock():
                self.active = True
                self.observer.set_leases(1)
                self.observer.db_ok()
                if waited:
                    self.stats.handovers += 1
                    self.observer.handover(1)
                life_log.info("relay holds slot %s%s", reader.slot, " (took over)" if waited else "")
                warning = await reader.retention_warning()
                if warning:
                    log.warning("%s", warning)
                return True
            if not waited:
                life_log.info("slot %s is read by another relay; standing by", reader.slot)
                waited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(1.0, reader.takeover / 4))
        return False

    async def _serve(self, reader: TailReader, publisher: Publisher, stop: asyncio.Event) -> None:
        decoder = self.decoder_factory()
        streams = waits_in_peek(reader)
        idle = 0  # empty peeks in a row: the pause between peeks doubles with it
        advanced = time.monotonic()
        # A change is a row of the peek: a one-event transaction is three (begin, event, commit), so
        # three per batch_size event makes a round of about batch_size one-event transactions
        # (measured: 2-3x the rate of a round of batch_size changes, docs/performance.md).
        while not stop.is_set():
            if self.narrowing.set_aside_due:
                await self.dead.one_input(reader, decoder, self.narrowing)
                continue
            limit = self.narrowing.limit
            messages, upto = await reader.peek(limit)
            transactions = decoder.transactions(messages)
            whole = len(messages) < limit
            if transactions and not await self._publish(reader, publisher, transactions, stop):
                return  # SIGTERM mid-batch: confirmed rows are marked, the slot stays; re-read later
            # Whole: every commit before ``upto`` was seen (the heartbeat); else up to the last one.
            # A round with nothing of ours (empty, or only other tables' transactions and other
            # tools' messages) moves the slot at most once a second when it was whole: that is
            # heartbeat enough, and an advance decodes the WAL it passes once more. A round that
            # was not whole always moves it, or a flood of foreign traffic would pin it (H13).
            ours = any(tx.items for tx in transactions)
            if ours or (transactions and not whole) or (whole and time.monotonic() - advanced >= 1.0):
                await reader.advance(upto if whole else transactions[-1].end_lsn)
                advanced = time.monotonic()
            if messages:
                self.narrowing.succeeded()
            self.stats.batches += 1
            if whole:
                self.lag_seconds = 0.0
            if time.monotonic() - self._lag_checked > 5.0:
                self._lag_checked = time.monotonic()
                self.lag_bytes = await reader.lag_bytes()
            if not whole or streams:
                continue  # a streaming reader's peek waits for the next change itself
            # Caught up: peek again soon after traffic (2 ms), backing off to a twentieth of the poll
            # interval (50 ms by default) while idle. There is no NOTIFY for table-less events to
            # wake up on, and an empty peek costs about a millisecond.
            idle = 0 if ours else min(idle + 1, 16)
            pause = min(self.config.poll_interval / 20, 0.002 * 2**idle)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    async def _publish(
        self, reader: TailReader, publisher: Publisher, transactions: list[Transaction], stop: asyncio.Event
    ) -> bool:
        """Publish every event of ``transactions`` (per-key ordered), then mark their rows delivered.

        Returns False when ``stop`` came first: what was sent is awaited and its rows marked, the
        rest is left for the next reader of the slot."""
        items = {item.event.seq: item for tx in transactions for item in tx.items}
        # A key no store can hold (lone surrogates, NUL, megabytes) belongs to a defect only, and
        # could not be looked up either: leave it out of the query (H13).
        keys = sorted({k for i in items.values() if (k := i.event.key) and storable(k, 1024) == k})
        held = await reader.held_keys(keys) if self.hold_dead_keys else set()
        ready: list[OutboxEvent] = []
        for item in items.values():
            if item.event.defect is not None:
                await self.dead.dead(reader, item, item.event.defect, 0, held)
            elif item.event.key is not None and item.event.key in held:
                await self.dead.dead(reader, item, f"held: key {item.event.key} has an earlier dead letter", 0, held)
            else:
                ready.append(item.event)
        dispatcher = KeyedDispatcher(ready)
        delivered: list[int] = []
        flying = 0
        # Outcomes arrive through done-callbacks (one per publish), not asyncio.wait over every
        # future in flight: that would be quadratic in the window.
        outcomes: list[tuple[OutboxEvent, float, asyncio.Future[None]]] = []
        arrived = asyncio.Event()

        def on_done(future: asyncio.Future[None], event: OutboxEvent, sent: float) -> None:
            outcomes.append((event, sent, future))
            arrived.set()

        retry_at: list[tuple[float, OutboxEvent, list[OutboxEvent]]] = []
        while not dispatcher.finished() or retry_at:
            if stop.is_set() and not flying:
                break
            now = time.monotonic()
            for entry in [r for r in retry_at if r[0] <= now]:
                retry_at.remove(entry)
                dispatcher.add([entry[1], *entry[2]])
            room = 0 if stop.is_set() else max(0, self.config.window - flying)
            for event in dispatcher.take(room):
                if not reader.trusted():
                    # Paused past the point where the lock is surely ours: another relay may hold
                    # the slot now. Publish nothing more; the session is rebuilt.
                    raise UnavailableError(f"slot {reader.slot}: lock not confirmed for {reader.takeover / 2:.1f}s")
                try:
                    future = await publisher.publish(event)
                except Exception as refused:
                    if isinstance(classify(refused), UnavailableError):
                        raise
                    # Refused before it left (a header the client cannot encode, ...): the event's
                    # own failure, judged like a refusal by the broker, never the round's (H13).
                    future = asyncio.get_running_loop().create_future()
                    future.set_exception(refused)
                future.add_done_callback(functools.partial(on_done, event=event, sent=time.monotonic()))
                flying += 1
            if not flying:
                wake = min((r[0] for r in retry_at), default=now + 0.1)
                await asyncio.sleep(max(0.001, min(wake - now, reader.takeover / 4)))
                await reader.ping()
                continue
            if not outcomes:
                try:
                    await asyncio.wait_for(arrived.wait(), reader.takeover / 4)
                except TimeoutError:
                    await reader.ping()  # keeps the session (and the lock) alive while the broker is slow
                    continue
            arrived.clear()
            done, outcomes[:] = list(outcomes), []
            for event, sent, future in done:
                flying -= 1
                exc = future.exception()
                if exc is None:
                    dispatcher.confirmed(event)
                    item = items[event.seq]
                    if item.row_seq is not None:
                        delivered.append(item.row_seq)
                    self.stats.published += 1
                    self.observer.published(event, time.monotonic() - sent)
                    continue
                verdict = judge(exc, event.attempts, self.config.max_attempts, rng=self._rng)
                error = classify(exc)
                self.observer.failed("permanent" if isinstance(error, PermanentError) else "transient")
                if verdict.outcome is Outcome.RECONNECT:
                    raise error
                rest = dispatcher.failed(event)
                self.stats.failed_attempts += 1
                if verdict.outcome is Outcome.DEAD:
                    await self.dead.dead(reader, items[event.seq], str(verdict.error), event.attempts + 1, held)
                    for later in rest:
                        if self.hold_dead_keys:
                            reason = f"held: key {later.key} has an earlier dead letter ({event.id})"
                            await self.dead.dead(reader, items[later.seq], reason, 0, held)
                        else:
                            dispatcher.add([later])
                    continue
                log.warning("publish of event %s failed (attempt %d): %s", event.id, event.attempts + 1, error)
                retry_at.append((time.monotonic() + verdict.delay, replace(event, attempts=event.attempts + 1), rest))
        await reader.mark_delivered(delivered)
        if not dispatcher.finished() or retry_at:
            return False
        last = transactions[-1].committed_at
        if last is not None:
            self.lag_seconds = max(0.0, time.time() - last.timestamp())
        return True

    def slot_lag(self) -> tuple[int | None, float | None]:
        """(bytes, seconds) behind, for ``/metrics`` (``RelayMetrics.slot_lag``)."""
        return self.lag_bytes, self.lag_seconds


def build_tail_relay(
    db: str,
    broker: str,
    *,
    capture: str | None = None,
    ref: TableRef | None = None,
    source: str = "/outboxkit",
    config: RelayConfig | None = None,
    hold_dead_keys: bool = True,
    observer: RelayObserver | None = None,
    slot: str | None = None,
) -> TailRelay:
    """A relay tailing the database's log ``capture`` (``wal``, ``binlog``; None: the database's own
    log), whose position ``outboxkit migrate --capture NAME`` made. The database package hands out
    the reader and the decoder (``stores/logcapture.py``); ``slot`` names a replication slot."""
    from outboxkit.brokers.registry import publisher_for
    from outboxkit.stores.registry import log_capture_for, store_for

    config = config or RelayConfig()
    table_ref = ref or TableRef()
    log_capture = log_capture_for(db, capture)  # refuses a database without that log, in one line
    # Build once now so a bad URL (or a slot name the log takes none of) fails here, at start-up,
    # not inside the retry loop.
    publisher_for(broker, source=source, max_in_flight=config.window)
    log_capture.reader(db, table_ref, takeover=config.lease_ttl, slot=slot)
    return TailRelay(
        lambda: log_capture.reader(db, table_ref, takeover=config.lease_ttl, slot=slot),
        lambda: publisher_for(broker, source=source, max_in_flight=config.window),
        lambda: log_capture.decoder(table_ref),
        config,
        observer,
        hold_dead_keys=hold_dead_keys,
        store_factory=lambda: store_for(db, table_ref, hold_dead_keys=hold_dead_keys),
    )


def _input_fault(exc: BaseException) -> bool:
    """Whether a failed round may be an input's fault, to narrow down: anything but outages and
    errors classed as transient (a deadlock, a lock timeout, a broker that is busy). Those are
    retried as they are: narrowing on them could set aside a good transaction while a lock is held.
    The inputs' own ways into the store (dead letters, held keys) are guarded so that their content
    never raises there."""
    return not isinstance(exc, TransientError | OSError | SchemaError | ConfigurationError)


async def _close(pair: tuple[TailReader, Publisher]) -> None:
    reader, publisher = pair
    await publisher.close()
    await reader.close()
