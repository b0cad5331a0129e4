"""Log tailing vs table polling: relay throughput PostgreSQL -> NATS JetStream, same run, same ceiling.

For each transaction shape (``--big`` events per transaction, and one event per transaction) and
each mode:

* ``table``: rows written with ``emit()``, the table relay (``build_relay``);
* ``wal``: the same rows, ``relay --capture wal`` (``build_tail_relay``) streaming the slot (the
  default reader, ``stores.postgres.walstream``);
* ``wal-sql``: the same, with the reader by SQL functions (``OUTBOXKIT_WAL_READER=sql``);
* ``wal-message``: table-less events (``MessageOutbox``), the same wal relay;

the events are written first (timed too: the write cost of each mode), then the relay runs until it
published them all; events/s. The raw ceiling is nats-py alone publishing the same messages with
the same window (``benchmarks.throughput.run_ceiling``), measured in the same run.

    .venv/bin/python -m benchmarks.wal
    .venv/bin/python -m benchmarks.wal --events 20000 --single-events 5000 --reps 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any

from benchmarks import tailing
from benchmarks.common import bench_env
from outboxkit import Outbox
from outboxkit.relay.process import build_relay
from outboxkit.relay.tail import build_tail_relay
from outboxkit.stores.postgres.wal import READER_ENV, drop_slot, migrate_wal, resolve_slot
from outboxkit.walemit import MessageOutbox

MODES = ("table", "wal", "wal-sql", "wal-message")


@contextlib.contextmanager
def reader(mode: str) -> Iterator[None]:
    """``wal-sql`` runs the relay with the SQL reader (``make_wal_reader`` reads the variable)."""
    saved = os.environ.get(READER_ENV)
    os.environ[READER_ENV] = "sql" if mode == "wal-sql" else "stream"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(READER_ENV, None)
        else:
            os.environ[READER_ENV] = saved


async def one(args: argparse.Namespace, mode: str, n: int, per_tx: int) -> dict[str, Any]:
    async with bench_env(args.db, args.broker, notify=True) as env:
        if mode != "table":
            await asyncio.to_thread(migrate_wal, env.db, env.ref)
        try:
            cls = MessageOutbox if mode == "wal-message" else Outbox
            outbox = cls(table=env.ref.table, schema=env.ref.schema)
            build = build_relay if mode == "table" else build_tail_relay
            with reader(mode):
                return await tailing.measure(args, env, mode, outbox, build, n, per_tx)
        finally:
            if mode != "table":
                await asyncio.to_thread(drop_slot, env.db, env.ref, resolve_slot(env.db, env.ref))


def main() -> None:
    tailing.main("wal", __doc__, MODES, one)


if __name__ == "__main__":
    main()
