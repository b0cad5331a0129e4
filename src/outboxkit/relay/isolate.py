"""One input, one casualty (H13): the I/O around ``core.isolate``'s decisions, for both relays.

Whatever goes wrong with one input — turning it into a message, publishing it, marking it,
dead-lettering it — ends with that input set aside, never with a round that fails the same way
again (which would stop every later event of every key, in this relay and the next one). One
mechanism, two adapters:

* a round that failed twice the same way (not an outage) is narrowed down to the input at fault,
  which becomes a dead letter: the table relay (:class:`Casualties`) bisects its fetch and
  dead-letters each row that cannot be read alone, by seq, without reading its content; the tail
  relay (:class:`TailCasualties`) reads its log from its position with a smaller and smaller limit
  and records the single input at fault, then moves its position past it;
* a dead letter that cannot be stored as it is gets one more try in a form that cannot fail for its
  content (a short reason of plain ASCII for a row; every text made storable and the key cleared
  for a log's event, since PostgreSQL refuses NUL client-side without an SQLSTATE);
* if even that fails without the store being down, the input is **set aside** (:func:`set_aside`,
  the same for both): recorded in memory (bounded, ``core.isolate.SetAside``), loudly (a log line at
  ERROR saying ``SET ASIDE``, the ``outboxkit_relay_set_aside`` metric, ``stats.set_aside``); the
  table relay no longer fetches it (nor, where its key is known, its key's later events, which must
  not overtake it), the tail relay's position moves past it;
* a mark that cannot be stored for a batch is retried row by row; a row whose mark alone fails is
  set aside (it was published: only its mark is missing, so a restart sends it once more).

Outages (``UnavailableError``: the database or the broker is down) are not the input's fault: they
still end the session, which reconnects, and nothing is counted or set aside.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from outboxkit.core.isolate import Bisector, FetchFaults, Narrowing, SetAside, signature
from outboxkit.core.retry import classify
from outboxkit.core.storable import storable
from outboxkit.core.tailing import Item
from outboxkit.errors import ConfigurationError, SchemaError, UnavailableError
from outboxkit.stores.base import Leases, OutboxStore
from outboxkit.stores.logcapture import TailDecoder, TailReader

if TYPE_CHECKING:
    from outboxkit.relay.loop import Relay, RelayStats
    from outboxkit.relay.observer import RelayObserver

log = logging.getLogger("outboxkit.relay")


def is_outage(exc: BaseException) -> bool:
    """Not the input's fault: the service is down, or the schema or configuration is wrong."""
    return isinstance(exc, SchemaError | ConfigurationError) or isinstance(classify(exc), UnavailableError)


def set_aside(
    aside: SetAside,
    stats: RelayStats,
    observer: RelayObserver,
    where: Hashable,
    key: str | None,
    reason: str,
    *,
    what: str,
) -> bool:
    """The last resort of both relays, for an input whose dead letter could not be stored: record
    it (``where``: a row's seq, an event's id), count it, log it at ERROR naming it as ``what``.
    False when it was recorded already."""
    if not aside.add(where, key, storable(reason)):
        return False
    stats.set_aside += 1
    observer.set_aside()
    log.error(
        "%s (key %s) SET ASIDE in memory, not read again by this process: %s",
        what,
        storable(key, 200),
        storable(reason, 500),
    )
    return True


class Casualties:
    """The table relay's adapter: what it set aside, and its watch over failing fetches (lives as
    long as the relay)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.faults = FetchFaults()
        self.aside = SetAside()

    # -- fetches -----------------------------------------------------------------------------------
    def fetch_failed(self, exc: BaseException) -> None:
        if not is_outage(exc) and self.faults.failed(exc):
            log.warning("fetch failed twice the same way (%s); narrowing it down to the row at fault", signature(exc))

    def fetch_ok(self) -> None:
        self.faults.ok()

    async def narrow_down(self, store: OutboxStore, leases: Leases) -> list[int]:
        """Read the failing round again in halves; dead-letter each row that cannot be read alone.
        Returns the seqs found at fault. An outage met on the way ends it (the caller reconnects)."""
        config = self.relay.config
        seqs = await store.pending_seqs(
            config.batch_size,
            self.relay._filter(),
            leases,
            max_bytes=config.fetch_max_bytes,
            exclude=self.aside.seqs,
        )
        bisector = Bisector(seqs)
        why: dict[int, str] = {}
        while (probe := bisector.probe()) is not None:
            try:
                await store.fetch_rows(probe)
            except Exception as exc:
                if is_outage(exc):
                    raise
                if len(probe) == 1:
                    why[probe[0]] = signature(exc)
                bisector.report(False)
            else:
                bisector.report(True)
        for seq in bisector.culprits:
            await self.dead_letter(store, seq, None, f"row {seq} cannot be read: {why.get(seq, '?')}", leases)
        if bisector.culprits:
            log.error("fetch narrowed down in %d reads: rows %s cannot be read", bisector.reads, bisector.culprits)
        else:
            log.warning("fetch narrowed down in %d reads, but every row read alone; retrying", bisector.reads)
        self.faults.ok()
        return bisector.culprits

    # -- dead letters and marks --------------------------------------------------------------------
    async def dead_letter(
        self, store: OutboxStore, seq: int, key: str | None, reason: str, leases: Leases | None
    ) -> bool:
        """Store a dead letter for ``seq`` by seq only; if even that fails (not an outage), once
        more with a short ASCII reason, then set it aside. Returns whether the row was updated."""
        relay = self.relay
        try:
            updated = await store.record_failure(seq, storable(reason), dead=True, leases=leases)
        except Exception as exc:
            if is_outage(exc):
                raise
            short = f"dead letter of row {seq}: {type(exc).__name__} storing the full reason"
            try:
                updated = await store.record_failure(seq, short, dead=True, leases=leases)
            except Exception as again:
                if is_outage(again):
                    raise
                self.set_aside(seq, key, f"{reason}; its dead letter failed: {signature(again)}")
                return False
        if updated:
            relay.stats.dead_lettered += 1
            relay.observer.dead_lettered()
            log.error("dead-lettered row %s (key %s): %s", seq, storable(key, 200), storable(reason, 500))
        return updated

    def set_aside(self, seq: int, key: str | None, reason: str) -> None:
        """The last resort: this process no longer fetches ``seq`` (nor, with ``key``, its key)."""
        set_aside(self.aside, self.relay.stats, self.relay.observer, seq, key, reason, what=f"row {seq}")

    async def mark_one_by_one(
        self, store: OutboxStore, seqs: Sequence[int], leases: Leases | None, first: BaseException
    ) -> int:
        """A mark of a batch failed (not an outage): mark row by row, and set aside a row whose
        mark fails alone. Returns how many rows were marked."""
        if is_outage(first):
            raise first
        log.warning("marking %d rows failed (%s); marking them one by one", len(seqs), signature(first))
        marked = 0
        for seq in seqs:
            try:
                marked += await store.mark_delivered([seq], leases)
            except Exception as exc:
                if is_outage(exc):
                    raise
                self.set_aside(seq, None, f"row {seq} was published but cannot be marked: {signature(exc)}")
                marked += 1  # not fenced: settled as far as this process goes
        return marked


class TailCasualties:
    """The tail relay's adapter: its dead letters, which never fail for what an input holds (1. as
    it is: the row gets ``dead_at``, a table-less event a row of its own; 2. every text made storable
    and the key cleared; 3. set aside), and the single input a narrowed round found at fault. One per
    relay; not thread-safe."""

    def __init__(self, stats: RelayStats, observer: RelayObserver, *, hold_dead_keys: bool) -> None:
        self.stats = stats
        self.observer = observer
        self.hold_dead_keys = hold_dead_keys
        # Inputs set aside without a dead letter (even a sanitized one could not be stored).
        self.aside = SetAside()

    async def dead(self, reader: TailReader, item: Item, reason: str, attempts: int, held: set[str]) -> None:
        """Record ``item`` as a dead letter; it never raises for what the item holds (outages do)."""
        event = item.event
        try:
            if item.row_seq is None or not await reader.dead_row(item.row_seq, reason, attempts):
                # A table-less event, or a row its writer deleted: the dead letter gets a row of its own.
                await reader.dead_message(
                    id=event.id,
                    topic=event.topic,
                    key=event.key,
                    type=event.type,
                    source=event.source,
                    payload=event.payload,
                    content_type=event.content_type,
                    headers=json.dumps(dict(event.headers)),
                    attempts=attempts,
                    error=reason,
                )
        except Exception as exc:
            # Even "unavailable" may be the content here (see the module docstring): the sanitized
            # copy tells. If the store is really down, it fails too.
            stored = await self._sanitized(reader, item, reason, attempts, exc)
        else:
            stored = True
        if event.key is not None and self.hold_dead_keys:
            held.add(event.key)  # set aside too: its key's later events must not overtake it
        if not stored:
            return  # set aside (counted there), as the table relay does
        self.stats.dead_lettered += 1
        self.observer.dead_lettered()
        log.error(
            "dead-lettered event %s (topic %s, key %s): %s",
            storable(event.id, 80),
            storable(event.topic, 200),
            storable(event.key, 200),
            storable(reason, 500),
        )

    async def _sanitized(self, reader: TailReader, item: Item, reason: str, attempts: int, first: Exception) -> bool:
        """The dead letter in a form its content cannot fail; False when it was set aside instead."""
        event = item.event
        why = f"{reason} (stored sanitized: {signature(first)}; key {storable(event.key, 200)})"
        try:
            if item.row_seq is not None and await reader.dead_row(item.row_seq, why, attempts, keep_key=False):
                return True
            await reader.dead_message(
                id=None,
                topic=storable(event.topic, 255),
                key=None,  # a key the store cannot take is no key any valid event holds
                type=None,
                source=None,
                payload=event.payload[:1_000_000],
                content_type="application/octet-stream",
                headers="{}",
                attempts=attempts,
                error=storable(why),
            )
        except Exception as exc:
            if isinstance(exc, UnavailableError | OSError):
                raise  # the store is down: the round is read again once it is back
            # Anything else (a deadlock, a trigger, a check): the event is not lost to a loop.
            what = f"event {storable(event.id, 80)}"
            set_aside(
                self.aside, self.stats, self.observer, what, event.key, f"{why}; unstored: {signature(exc)}", what=what
            )
            return False
        return True

    @property
    def records(self) -> list[str]:
        """The reasons of the inputs set aside without a dead letter (bounded; each logged at ERROR)."""
        return [aside.reason for aside in self.aside.items()]

    async def one_input(self, reader: TailReader, decoder: TailDecoder, narrowing: Narrowing) -> None:
        """The single input at the reader's position failed the same way at every narrowing:
        record it (its raw form, bounded) and move past it."""
        messages, _upto = await reader.peek(1)
        end = decoder.unit_end(messages) if messages else None
        if end is None:
            narrowing.set_aside()  # nothing there any more, or nothing to tell its end by
            return
        where = storable(reader.resume_point(), 200)
        reason = f"set aside after failing the same way at every narrowing (from {where}): {narrowing.error}"
        try:
            await reader.dead_message(
                id=None,
                topic="?",
                key=None,
                type=None,
                source=None,
                payload=storable(repr(messages), 100_000).encode(),
                content_type="application/octet-stream",
                headers="{}",
                attempts=0,
                error=storable(reason),
            )
            self.stats.dead_lettered += 1
            self.observer.dead_lettered()
            log.error("%s", reason)
        except Exception as exc:
            if isinstance(exc, UnavailableError | OSError):
                raise
            what = f"the input at {where}"
            set_aside(
                self.aside, self.stats, self.observer, what, None, f"{reason}; unstored: {signature(exc)}", what=what
            )
        await reader.advance(end)
        narrowing.set_aside()
