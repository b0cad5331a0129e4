"""``relay --capture wal --resume-from-now``: the recovery when the relay's replication slot is
gone (invalidated by ``max_slot_wal_keep_size``, dropped, missing on a promoted standby, or never
made). Same reasoning as ``relay/binlogresume.py``:

1. make a new slot (the old one dropped if it is still listed as lost); read the highest outbox
   seq S right after: every row committed before the new slot's start has a seq at most S;
2. run the table relay until no pending row has a seq at most S;
3. tail the new slot: every commit after its start is in it.

Rows committed after the start that the drain also published are duplicates (same event id).
Table-less events (``MessageOutbox``) committed between the old slot's last confirmed position and
the new slot's start existed only in the log: they are lost, and the log line names the window.
A healthy slot is left as it is (nothing to recover). Interrupted in step 2: run it again (the
new slot keeps every commit since its start, and the drain starts over).
"""

from __future__ import annotations

import asyncio
import logging

from outboxkit.core.logfmt import LIFE_LOGGER
from outboxkit.relay.binlogresume import drain_up_to
from outboxkit.relay.loop import RelayConfig
from outboxkit.stores.base import TableRef

life_log = logging.getLogger(LIFE_LOGGER)
log = logging.getLogger("outboxkit.relay")


async def recreate_then_drain(
    db: str,
    broker: str,
    *,
    ref: TableRef,
    source: str = "/outboxkit",
    config: RelayConfig | None = None,
    hold_dead_keys: bool = True,
    timeout: float | None = None,
) -> int:
    """Steps 1-2 above; returns how many rows the drain found pending (0 for a healthy slot)."""
    from outboxkit.stores.postgres.walrecover import pending_up_to, recreate_slot

    made = await asyncio.to_thread(recreate_slot, db, ref)
    if made.healthy:
        life_log.info("resume from now: slot %s is healthy at %s; nothing to recover", made.slot, made.start)
        return 0
    log.warning(
        "resume from now: new slot %s starts at %s; table-less events (MessageOutbox) committed between %s and "
        "%s were only in the lost log and are not recoverable",
        made.slot,
        made.start,
        made.lost_from or "the old slot's last confirmed position (unknown: the slot was dropped)",
        made.start,
    )
    pending = await asyncio.to_thread(pending_up_to, db, ref, made.upto)
    life_log.info(
        "resume from now: draining %d pending outbox rows (seq <= %d) with the table relay", pending, made.upto
    )
    if pending:
        await drain_up_to(
            db,
            broker,
            lambda: pending_up_to(db, ref, made.upto),
            ref=ref,
            source=source,
            config=config,
            hold_dead_keys=hold_dead_keys,
            timeout=timeout,
        )
    life_log.info("resume from now: drained; tailing slot %s from %s", made.slot, made.start)
    return pending
