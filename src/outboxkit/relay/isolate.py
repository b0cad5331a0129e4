"""One input, one casualty (H13): the I/O around ``core.isolate``'s decisions, for the table relay.

Whatever goes wrong with one input — turning it into a message, publishing it, marking it,
dead-lettering it — ends with that input set aside, never with a round that fails the same way
again (which would stop every later event of every key, in this relay and the next one):

* a fetch that failed twice the same way (not an outage) is narrowed down by halves to the rows that
  cannot be read alone, and each is dead-lettered by seq without reading its content;
* a dead letter that cannot be stored is tried once more with a short reason of plain ASCII, then
  the input is set aside in memory (bounded), loudly: a log line at ERROR, the
  ``outboxkit_relay_set_aside`` metric, and this process no longer fetches it (nor, where its key is
  known, its key's later events, which must not overtake it);
* a mark that cannot be stored for a batch is retried row by row; a row whose mark alone fails is
  set aside (it was published: only its mark is missing, so a restart sends it once more).

Outages (``UnavailableError``: the database or the broker is down) are not the input's fault: they
still end the session, which reconnects, and nothing is counted or set aside.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from outboxkit.core.isolate import Bisector, FetchFaults, SetAside, signature
from outboxkit.core.retry import classify
from outboxkit.core.storable import storable
from outboxkit.errors import ConfigurationError, SchemaError, UnavailableError
from outboxkit.stores.base import Leases, OutboxStore

if TYPE_CHECKING:
    from outboxkit.relay.loop import Relay

log = logging.getLogger("outboxkit.relay")


def is_outage(exc: BaseException) -> bool:
    """Not the input's fault: the service is down, or the schema or configuration is wrong."""
    return isinstance(exc, SchemaError | ConfigurationError) or isinstance(classify(exc), UnavailableError)


class Casualties:
    """What one relay set aside, and its watch over failing fetches (lives as long as the relay)."""

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
        if not self.aside.add(seq, key, storable(reason)):
            return
        self.relay.stats.set_aside += 1
        self.relay.observer.set_aside()
        log.error(
            "row %s (key %s) SET ASIDE in memory, not fetched again by this process: %s",
            seq,
            storable(key, 200),
            storable(reason, 500),
        )

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
