"""``relay --capture binlog --resume-from-now``: the recovery after the binlog was purged.

When the binlog file or GTID the stored position needs is gone, the events committed since that
position are still in the outbox table (pending rows); only the log of them is lost. So:

1. read the server's binlog position P now, and the highest outbox seq S right after;
2. run the table relay (the same one as ``--capture table``) until no pending row has a seq at
   most S: every row committed before P has a seq at most S (its seq was taken before its commit,
   and its commit came before P was read), so every one of them is now published;
3. store P as the binlog position; tailing starts there.

Rows committed after P are in the binlog after P: the tail publishes them, and those the table
relay also published in step 2 are duplicates (same event id, dropped by the broker's dedupe
window or the inbox). Nothing is lost. If the recovery is interrupted before step 3, the stored
position is still the purged one: run it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from outboxkit.core.logfmt import LIFE_LOGGER
from outboxkit.relay.loop import RelayConfig
from outboxkit.relay.observer import RelayObserver
from outboxkit.stores.base import TableRef

life_log = logging.getLogger(LIFE_LOGGER)


async def drain_then_resume(
    db: str,
    broker: str,
    *,
    ref: TableRef,
    source: str = "/outboxkit",
    config: RelayConfig | None = None,
    hold_dead_keys: bool = True,
    observer: RelayObserver | None = None,
    timeout: float | None = None,
) -> int:
    """Steps 1-3 above; returns how many rows the drain found pending. Raises ``TimeoutError``
    when the drain takes longer than ``timeout`` (the position is then left as it was)."""
    from outboxkit.stores.mariadb.binlogpos import pending_up_to, server_position, store_resume_position

    position, upto = await asyncio.to_thread(server_position, db, ref)
    pending = await asyncio.to_thread(pending_up_to, db, ref, upto)
    life_log.info(
        "resume from now: binlog %s:%s; draining %d pending outbox rows (seq <= %d) with the table relay",
        position.log_file,
        position.log_pos,
        pending,
        upto,
    )
    if pending:
        await drain_up_to(
            db,
            broker,
            lambda: pending_up_to(db, ref, upto),
            ref=ref,
            source=source,
            config=config,
            hold_dead_keys=hold_dead_keys,
            observer=observer,
            timeout=timeout,
        )
    await asyncio.to_thread(store_resume_position, db, ref, position)
    life_log.info("resume from now: drained; tailing the binlog from %s:%s", position.log_file, position.log_pos)
    return pending


async def drain_up_to(
    db: str,
    broker: str,
    pending: Callable[[], int],
    *,
    ref: TableRef,
    source: str = "/outboxkit",
    config: RelayConfig | None = None,
    hold_dead_keys: bool = True,
    observer: RelayObserver | None = None,
    timeout: float | None = None,
) -> None:
    """Run the table relay until ``pending()`` (rows up to the recovery's seq) is 0 (step 2)."""
    from outboxkit.relay.process import build_relay

    relay = build_relay(
        db, broker, ref=ref, source=source, config=config, hold_dead_keys=hold_dead_keys, observer=observer
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while await asyncio.to_thread(pending):
                if task.done():
                    task.result()
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
