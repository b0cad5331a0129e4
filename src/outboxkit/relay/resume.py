"""``relay --capture wal|binlog --resume-from-now``: the recovery when the log the relay's position
needs is gone (a PostgreSQL slot invalidated by ``max_slot_wal_keep_size``, dropped, or missing on a
promoted standby; a binlog purged). The events committed since the position are still in the outbox
table (pending rows); only the log of them is lost. So, for any log capture:

1. the capture makes a new position from which every later commit is in the log (a new slot; the
   server's binlog position read now), and reads the highest outbox seq S after it: every row
   committed before the new position has a seq at most S (its seq was taken before its commit)
   (``LogCapture.resume_plan``);
2. the table relay (the one of ``--capture table``) runs until no pending row has a seq at most S;
3. the capture's ``finish`` (the binlog stores its new position here), then the tail starts at the
   new position.

Rows committed after the new position that the drain also published are duplicates (same event
id, dropped by the broker's dedupe window or the inbox): nothing with a row is lost. Table-less
events (``MessageOutbox``) that existed only in the lost log are gone, and the log line says which
window. A healthy position is left as it is. Interrupted before step 3: run it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from outboxkit.core.logfmt import LIFE_LOGGER
from outboxkit.core.urls import redact_url
from outboxkit.relay.loop import RelayConfig
from outboxkit.relay.observer import RelayObserver
from outboxkit.stores.base import TableRef
from outboxkit.stores.database import placeholders
from outboxkit.stores.logcapture import LogCapture
from outboxkit.stores.registry import database_for

life_log = logging.getLogger(LIFE_LOGGER)
log = logging.getLogger("outboxkit.relay")


async def resume_from_now(
    capture: LogCapture,
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
    """Steps 1-3 above; returns how many rows the drain found pending (0 for a healthy position).
    Raises ``TimeoutError`` when the drain takes longer than ``timeout`` (step 3 is then not done)."""
    plan = await asyncio.to_thread(capture.resume_plan, db, ref)
    if plan.upto is None:
        life_log.info("resume from now: %s; nothing to recover", plan.at)
        return 0
    upto = plan.upto
    if plan.warning:
        log.warning("resume from now: %s; %s", plan.at, plan.warning)
    pending = await asyncio.to_thread(pending_up_to, db, ref, upto)
    life_log.info(
        "resume from now: %s; draining %d pending outbox rows (seq <= %d) with the table relay", plan.at, pending, upto
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
    await asyncio.to_thread(plan.finish)
    life_log.info("resume from now: drained; tailing %s", plan.tail_from)
    return pending


def pending_up_to(db: str, ref: TableRef, seq: int) -> int:
    """Pending outbox rows with a seq at most ``seq`` (what the drain still has to publish)."""
    database = database_for(db)
    sql = (
        f"SELECT COUNT(*) FROM {ref.quoted(database.quote)} WHERE delivered_at IS NULL AND dead_at IS NULL AND seq <= ?"
    )
    conn = database.connect(db, label="outboxkit-resume")
    try:
        row = conn.execute(placeholders(database, sql), (seq,)).fetchone()
    except Exception as exc:
        raise (database.translate(exc, redact_url(db)) or exc) from None
    finally:
        conn.close()
    return int(row[0]) if row else 0


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
