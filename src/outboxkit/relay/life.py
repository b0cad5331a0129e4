"""What a running relay says at the default log level: one line when it starts and a periodic
one-line summary, so that a relay that works and a relay that hangs do not look the same.

``Life`` wraps the relay's observer (metrics or none): it counts what passes through and forwards
every call, so the relay loop needs no change and the counts are the ones the metrics see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.logfmt import LIFE_LOGGER
from outboxkit.relay.observer import FailureKind, NullObserver, RelayObserver
from outboxkit.stores.base import BUCKETS

log = logging.getLogger(LIFE_LOGGER)

#: A backlog probe: rows waiting (neither delivered nor dead), or None when it cannot tell now.
BacklogCount = Callable[[], Awaitable[int | None]]


class Life:
    """A :class:`RelayObserver` that counts for the summary line and passes everything on."""

    def __init__(self, inner: RelayObserver | None, *, where: str) -> None:
        self.inner: RelayObserver = inner or NullObserver()
        self.where = where
        self.published_total = 0
        self.failed_total = 0
        self.dead_total = 0
        self.buckets: int | None = None
        self._reported = (0, 0, 0)
        self._last_at = time.monotonic()

    # -- RelayObserver ------------------------------------------------------------------------------
    def published(self, event: OutboxEvent, latency_s: float) -> None:
        self.published_total += 1
        self.inner.published(event, latency_s)

    def failed(self, kind: FailureKind) -> None:
        self.failed_total += 1
        self.inner.failed(kind)

    def dead_lettered(self) -> None:
        self.dead_total += 1
        self.inner.dead_lettered()

    def set_aside(self) -> None:
        self.dead_total += 1  # for the summary, one more input that will not be delivered
        self.inner.set_aside()

    def handover(self, buckets: int = 1) -> None:
        self.inner.handover(buckets)

    def fenced(self, events: int) -> None:
        self.inner.fenced(events)

    def set_leases(self, buckets: int) -> None:
        first = self.buckets is None
        self.buckets = buckets
        if first:
            # The first lease round trip: both sides answered and the relay knows its share.
            share = f"holds {buckets} of {BUCKETS} buckets"
            if not buckets:
                share += " (other relays hold them; standing by)"
            log.info("relay started: %s; %s", self.where, share)
        self.inner.set_leases(buckets)

    def db_ok(self) -> None:
        self.inner.db_ok()

    def broker_ok(self) -> None:
        self.inner.broker_ok()

    # -- the summary --------------------------------------------------------------------------------
    def summary(self, backlog: int | None) -> str:
        """``relay: 1,200 published (+200 in 60s), 0 failed, 0 dead-lettered; backlog 0; 64/64 buckets``."""
        now = time.monotonic()
        published, failed, dead = self.published_total, self.failed_total, self.dead_total
        recent = published - self._reported[0]
        span = now - self._last_at
        self._reported, self._last_at = (published, failed, dead), now
        waiting = "unknown" if backlog is None else f"{backlog:,}"
        buckets = "?" if self.buckets is None else str(self.buckets)
        return (
            f"relay: {published:,} published (+{recent:,} in {span:.0f}s), {failed:,} failed attempts, "
            f"{dead:,} dead-lettered; backlog {waiting}; {buckets}/{BUCKETS} buckets"
        )


async def report_periodically(life: Life, interval: float, backlog: BacklogCount | None) -> None:
    """Log ``life.summary()`` every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        count: int | None = None
        if backlog is not None:
            with contextlib.suppress(Exception):  # an unknown backlog is reported as unknown
                count = await asyncio.wait_for(backlog(), 5.0)
        log.info("%s", life.summary(count))


__all__ = ["BacklogCount", "Life", "report_periodically"]
