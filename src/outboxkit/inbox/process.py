"""Running an inbox consumer as a process: handler loading, adapters from URLs, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence

from outboxkit.brokers.registry import consumer_for
from outboxkit.core.logfmt import LIFE_LOGGER
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, SchemaError
from outboxkit.imports import load_object
from outboxkit.inbox.runner import Handler, InboxRunner, InboxStats
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for

log = logging.getLogger("outboxkit.inbox")
life = logging.getLogger(LIFE_LOGGER)


def load_handler(spec: str) -> Handler:
    """``package.module:function`` -> the function, with a one-line error for each way it can fail.

    Imported like every ``module:attr`` option (:func:`outboxkit.imports.load_object`): from the
    current directory first, as ``python -m`` does."""
    fn = load_object(spec, option="--handler", what="handler")
    if not callable(fn):
        raise ConfigurationError(f"{spec!r} is not a function")
    handler: Handler = fn
    return handler


def _check_inbox(db: str, ref: TableRef) -> None:
    conn = connect_sync(db)
    try:
        conn.execute(f"SELECT 1 FROM {ref.quoted(database_for(db).quote)} WHERE 1 = 0")
    except Exception:
        raise SchemaError(
            f"inbox table {ref.qualified} not found: run `outboxkit migrate --inbox --db URL` first"
        ) from None
    finally:
        conn.close()


async def serve_inbox(
    broker: str,
    db: str,
    *,
    group: str,
    topics: Sequence[str],
    handler: Handler,
    table: str = "inbox",
    schema: str | None = None,
    max_attempts: int = 5,
    check_order: bool = False,
    hold_failed_keys: bool = True,
    handler_name: str | None = None,
    summary_interval: float = 60.0,
) -> InboxStats:
    ref = TableRef(table, schema)
    consumer_for(broker, group=group, topics=topics)  # a bad URL fails here, once
    await asyncio.to_thread(_check_inbox, db, ref)
    first = consumer_for(broker, group=group, topics=topics)
    await first.connect()  # fail fast at start-up; later outages are retried by the runner
    runner = InboxRunner(
        lambda: consumer_for(broker, group=group, topics=topics),
        db,
        group,
        handler,
        ref=ref,
        max_attempts=max_attempts,
        check_order=check_order,
        hold_failed_keys=hold_failed_keys,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    life.info(
        "consumer %s started: %s topics %s -> %s inbox %s, handler %s",
        group,
        redact_url(broker),
        ", ".join(topics),
        redact_url(db),
        ref.qualified,
        handler_name or getattr(handler, "__qualname__", "?"),
    )
    reporter = asyncio.create_task(_report(runner, summary_interval)) if summary_interval else None
    try:
        await runner.run(stop, first=first)
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return runner.stats


async def _report(runner: InboxRunner, interval: float) -> None:
    """One summary line every ``interval`` seconds: what the consumer did since it started."""
    last, last_at = 0, time.monotonic()
    while True:
        await asyncio.sleep(interval)
        s, now = runner.stats, time.monotonic()
        life.info(
            "consumer %s: %s processed (+%s in %.0fs), %s duplicates skipped, %s handler failures, %s dead-lettered",
            runner.name,
            f"{s.processed:,}",
            f"{s.processed - last:,}",
            now - last_at,
            f"{s.duplicates:,}",
            f"{s.failed:,}",
            f"{s.dead_lettered:,}",
        )
        last, last_at = s.processed, now
