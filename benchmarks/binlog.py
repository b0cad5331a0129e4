"""Binlog tailing vs table polling: relay throughput MariaDB -> NATS JetStream, same run, same ceiling.

For each transaction shape (``--big`` events per transaction, and one event per transaction) and
each mode:

* ``table``: rows written with ``emit()``, the table relay (``build_relay``);
* ``binlog``: the same rows, ``relay --capture binlog`` (``build_tail_relay``) reading the binlog;

the events are written first (timed too: the write cost of each mode), then the relay runs until it
published them all; events/s. The raw ceiling is nats-py alone publishing the same messages with
the same window (``benchmarks.throughput.run_ceiling``), measured in the same run.

    .venv/bin/python -m benchmarks.binlog
    .venv/bin/python -m benchmarks.binlog --events 20000 --single-events 5000 --reps 1
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from benchmarks import tailing
from benchmarks.common import MARIADB_URL, bench_env
from outboxkit import Outbox
from outboxkit.relay.process import build_relay
from outboxkit.relay.tail import build_tail_relay
from outboxkit.stores.mariadb.binlogpos import migrate_binlog

MODES = ("table", "binlog")


async def one(args: argparse.Namespace, mode: str, n: int, per_tx: int) -> dict[str, Any]:
    async with bench_env(args.db, args.broker, notify=True) as env:
        if mode == "binlog":
            await asyncio.to_thread(migrate_binlog, env.db, env.ref)  # dropped with the schema
        outbox = Outbox(table=env.ref.table, schema=env.ref.schema)
        build = build_relay if mode == "table" else build_tail_relay
        return await tailing.measure(args, env, mode, outbox, build, n, per_tx)


def main() -> None:
    tailing.main("binlog", __doc__, MODES, one, default_db=MARIADB_URL)


if __name__ == "__main__":
    main()
