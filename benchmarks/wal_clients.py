"""Which client streams a replication slot faster: psycopg 3 at the libpq level (the relay's
``walstream.PostgresWalStream``) or psycopg2's ``LogicalReplicationConnection``. The measurement
behind the choice in docs/log-tailing.md.

Both read the same slot from its confirmed position to the WAL position after ``--events`` events
(written first, in transactions of ``--per-tx``), with the same pgoutput options (binary columns,
messages), on the event loop (psycopg2's socket watched by ``loop.add_reader``, as a relay would),
and cut the stream into the same units (``walframe.Framer``). Neither advances the slot, so every
repetition reads the same WAL. Messages/s; the decoding of events is left out (it is the same).

psycopg2 is not a dependency of outboxkit: install it in the environment you run this from
(``pip install psycopg2-binary``); without it only the psycopg 3 client runs.

    .venv/bin/python -m benchmarks.wal_clients --events 50000 --per-tx 500 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks import tailing
from benchmarks.common import add_common_args, bench_env, load1, median, table, write_results
from outboxkit import Outbox
from outboxkit.stores.postgres.pgoutput import parse_lsn
from outboxkit.stores.postgres.wal import drop_slot, migrate_wal, resolve_slot
from outboxkit.stores.postgres.walframe import Framer
from outboxkit.stores.postgres.walstream import PostgresWalStream


async def psycopg3(db: str, ref: Any, target: int) -> int:
    reader = PostgresWalStream(db, ref, takeover=30.0)
    await reader.connect()
    try:
        # The previous client's walsender may take a moment to let the slot go.
        while not await reader.try_lock():
            await asyncio.sleep(0.05)
        count = 0
        while True:
            messages, upto = await reader.peek(10**9)
            count += len(messages)
            if upto >= target:
                return count
    finally:
        await reader.close()


async def psycopg2_stream(db: str, slot: str, target: int) -> int:
    import psycopg2  # type: ignore[import-not-found,import-untyped,unused-ignore]
    import psycopg2.errors  # type: ignore[import-not-found,import-untyped,unused-ignore]
    import psycopg2.extras  # type: ignore[import-not-found,import-untyped,unused-ignore]

    conn = psycopg2.connect(db, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    options = {"proto_version": "1", "publication_names": slot, "messages": "true", "binary": "true"}
    while True:
        try:
            cur.start_replication(slot_name=slot, decode=False, options=options)
            break
        except psycopg2.errors.ObjectInUse:  # the previous client's walsender is still leaving
            conn.close()
            await asyncio.sleep(0.05)
            conn = psycopg2.connect(db, connection_factory=psycopg2.extras.LogicalReplicationConnection)
            cur = conn.cursor()
    framer = Framer(0)
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(conn.fileno(), ready.set)
    count = 0
    try:
        while True:
            ready.clear()
            while (msg := cur.read_message()) is not None:
                framer.data(msg.payload)
            framer.keepalive(cur.wal_end)
            messages, upto = framer.take(10**9)
            count += len(messages)
            if upto >= target:
                return count
            await ready.wait()
    finally:
        loop.remove_reader(conn.fileno())
        conn.close()


async def one(args: argparse.Namespace, rep: int) -> list[dict[str, Any]]:
    out = []
    async with bench_env(args.db, args.broker, notify=False) as env:
        slot = await asyncio.to_thread(migrate_wal, env.db, env.ref)
        try:
            outbox = Outbox(table=env.ref.table, schema=env.ref.schema)
            await asyncio.to_thread(tailing.prewrite, env.db, outbox, env.topic(), args.events, args.per_tx, 1000)
            import psycopg

            with psycopg.connect(env.db, autocommit=True) as conn:
                row = conn.execute(b"SELECT pg_current_wal_flush_lsn()::text").fetchone()
            assert row is not None
            target = parse_lsn(row[0])
            clients = ["psycopg3", "psycopg2"] if args.psycopg2 else ["psycopg3"]
            for client in clients if rep % 2 else clients[::-1]:
                load = load1()
                t0 = time.perf_counter()
                if client == "psycopg3":
                    n = await psycopg3(env.db, env.ref, target)
                else:
                    n = await psycopg2_stream(env.db, slot, target)
                elapsed = time.perf_counter() - t0
                out.append(
                    {"client": client, "rep": rep, "messages": n, "s": elapsed, "per_s": n / elapsed, "load": load}
                )
                print(f"rep {rep} {client}: {n:,} messages in {elapsed:.2f}s = {n / elapsed:,.0f}/s (load {load:.1f})")
        finally:
            await asyncio.to_thread(drop_slot, env.db, env.ref, resolve_slot(env.db, env.ref))
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for rep in range(1, args.reps + 1):
        runs += await one(args, rep)
    rows = []
    for client in ("psycopg3", "psycopg2"):
        mine = [r["per_s"] for r in runs if r["client"] == client]
        if mine:
            rows.append([client, f"{median(mine):,.0f}", f"{min(mine):,.0f}", f"{max(mine):,.0f}"])
    print(table(["client", "median msg/s", "min", "max"], rows))
    return {"params": vars(args), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--per-tx", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    try:
        import psycopg2  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401

        args.psycopg2 = True
    except ImportError:
        print("psycopg2 is not installed: the psycopg 3 client only")
        args.psycopg2 = False
    result = asyncio.run(main_async(args))
    path = write_results("wal_clients", result, disabled=args.no_json)
    if path:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
