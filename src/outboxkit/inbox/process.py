"""Running an inbox consumer as a process: handler loading, adapters from URLs, signals."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Sequence

from outboxkit.brokers.registry import consumer_for
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, SchemaError
from outboxkit.inbox.runner import Handler, InboxRunner, InboxStats
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for

log = logging.getLogger("outboxkit.inbox")


def load_handler(spec: str) -> Handler:
    """``package.module:function`` -> the function, with a one-line error for each way it can fail."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"--handler must look like package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import handler module {module_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
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
    log.info("consumer %s started: %s -> %s", group, redact_url(broker), redact_url(db))
    try:
        await runner.run(stop, first=first)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return runner.stats
