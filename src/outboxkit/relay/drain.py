"""``outboxkit relay --until-empty``: publish what is pending, wait for every confirmation and its
mark, then stop: for CI pipelines, data migrations and framework tests.

The relay runs as always (same loop, same guarantees); beside it a probe counts the outbox's
pending rows on a connection of its own. A row stops being pending only when the relay marked it
after the broker's confirmation (or dead-lettered it), so a count of zero means everything that was
pending has been confirmed and marked. Then the relay is stopped the way SIGTERM stops it (the
current batch finishes). It cannot end well, and says why in one line, when:

* rows are still pending after ``timeout`` seconds (the broker is down, or refuses, past that bound);
* every pending row left is held behind a dead key (a key with a dead letter: the relay keeps its
  later events back, G5, so they can never go without an operator);
* the relay dead-lettered a row during the run (it was not published: the run did not do its job).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from outboxkit.relay.loop import Relay, RelayStats


@dataclass(frozen=True)
class Pending:
    """What the probe saw: rows waiting, and how many of them wait behind a dead key."""

    rows: int
    held: int = 0


#: Counts the outbox's pending rows on a connection of its own (never the relay's).
Probe = Callable[[], Awaitable[Pending]]


@dataclass(frozen=True)
class DrainResult:
    stats: RelayStats
    reason: str | None  # None: drained; else the one line that says why not

    @property
    def ok(self) -> bool:
        return self.reason is None


async def drain(
    relay: Relay,
    probe: Probe,
    *,
    timeout: float,
    interval: float = 0.1,
    hold_dead_keys: bool = True,
) -> DrainResult:
    """Relay until ``probe`` counts no pending row, or one of the reasons above; see the module."""
    first = await relay.start()  # an unreachable side fails here, at once, as `outboxkit relay` does
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(relay.run(stop, first=first))
    deadline = time.monotonic() + timeout
    reason: str | None = None
    try:
        while True:
            if running.done():
                running.result()  # the relay's own error, if any, is the reason
                reason = "the relay stopped (signal) before the outbox was empty"
                break
            pending = await probe()
            if pending.rows == 0:
                break
            if hold_dead_keys and pending.held and pending.held >= pending.rows:
                dead = relay.stats.dead_lettered
                reason = (
                    f"{pending.rows:,} pending row(s) are held behind dead keys and cannot be published"
                    + (f" ({dead:,} row(s) dead-lettered in this run)" if dead else "")
                    + ": see `outboxkit dead-letters list`"
                )
                break
            if time.monotonic() >= deadline:
                reason = (
                    f"{pending.rows:,} row(s) still pending after {timeout:g} s "
                    f"({relay.stats.failed_attempts:,} failed publish attempts, logged above)"
                )
                break
            # Wake early if the relay ends; otherwise look again after `interval`.
            await asyncio.wait({running}, timeout=interval)
    finally:
        stop.set()
        # The current batch finishes and its confirmations are marked, as on SIGTERM.
        with contextlib.suppress(asyncio.CancelledError):
            await running
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if reason is None and relay.stats.dead_lettered:
        reason = (
            f"{relay.stats.dead_lettered:,} row(s) were dead-lettered instead of published: "
            "see `outboxkit dead-letters list`"
        )
    return DrainResult(relay.stats, reason)
