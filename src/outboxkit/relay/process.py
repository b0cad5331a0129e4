"""Running a relay as a process: adapters from URLs, signal handling, a summary at exit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable

from outboxkit.brokers.registry import publisher_for
from outboxkit.core.urls import redact_url
from outboxkit.relay.life import BacklogCount, Life, report_periodically
from outboxkit.relay.loop import Relay, RelayConfig, RelayStats
from outboxkit.relay.observer import RelayObserver
from outboxkit.relay.tail import TailRelay
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import store_for

log = logging.getLogger("outboxkit.relay")


def build_relay(
    db: str,
    broker: str,
    *,
    ref: TableRef | None = None,
    source: str = "/outboxkit",
    config: RelayConfig | None = None,
    hold_dead_keys: bool = True,
    observer: RelayObserver | None = None,
) -> Relay:
    config = config or RelayConfig()
    # Build once now so a bad URL fails here, at start-up, not inside the retry loop.
    store_for(db, ref, hold_dead_keys=hold_dead_keys)
    publisher_for(broker, source=source, max_in_flight=config.window)
    return Relay(
        lambda: store_for(db, ref, hold_dead_keys=hold_dead_keys),
        lambda: publisher_for(broker, source=source, max_in_flight=config.window),
        config,
        observer,
    )


async def serve(
    relay: Relay | TailRelay,
    *,
    db: str,
    broker: str,
    table: str | None = None,
    summary_interval: float = 60.0,
    backlog: BacklogCount | None = None,
) -> RelayStats:
    """Start (failing fast if a side is unreachable), then relay until SIGTERM/SIGINT.

    Logs one line once it holds its buckets and, every ``summary_interval`` seconds (0: never), a
    summary with the backlog from ``backlog`` (see ``relay.life``). A signal lets the current batch
    finish (its confirmations are marked) before exiting."""
    where = f"{redact_url(db)}" + (f" table {table}" if table else "") + f" -> {redact_url(broker)}"
    life = Life(relay.observer, where=where)
    relay.observer = life
    # Opening both sides here fails fast, before the signal handlers, with one line for the CLI.
    running: Callable[[asyncio.Event], Awaitable[None]]
    if isinstance(relay, TailRelay):
        tail_first = await relay.start()
        running = functools.partial(relay.run, first=tail_first)
    else:
        first = await relay.start()
        running = functools.partial(relay.run, first=first)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("relay connected: %s", where)
    reporter = asyncio.create_task(report_periodically(life, summary_interval, backlog)) if summary_interval else None
    try:
        await running(stop)
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        relay.observer = life.inner
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return relay.stats
