"""What the log-tailing benchmarks share (``benchmarks.wal``, ``benchmarks.binlog``): write the
events first (timed), run a relay until it published them, measure nats-py's ceiling in the same
run, and compare each mode with the table relay, per transaction shape.

A benchmark module gives its modes and a ``one(args, mode, n, per_tx)`` that prepares the mode's
database objects and calls :func:`measure`; :func:`main` does the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from benchmarks.common import Env, add_common_args, key_for, load1, median, payload, table, write_results
from benchmarks.throughput import run_ceiling
from outboxkit import Outbox
from outboxkit.relay.loop import RelayConfig
from outboxkit.stores.registry import database_for

One = Callable[[argparse.Namespace, str, int, int], Awaitable[dict[str, Any]]]


def prewrite(db: str, outbox: Outbox, topic: str, n: int, per_tx: int, keys: int) -> float:
    """Seconds to write ``n`` events in transactions of ``per_tx``."""
    conn = database_for(db).connect(db, label="outboxkit-bench")
    try:
        t0 = time.perf_counter()
        for start in range(0, n, per_tx):
            conn.execute("BEGIN")
            for i in range(start, min(n, start + per_tx)):
                outbox.emit(conn, topic, payload(i), key=key_for(i, keys))
            conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


async def measure(
    args: argparse.Namespace, env: Env, mode: str, outbox: Outbox, build: Callable[..., Any], n: int, per_tx: int
) -> dict[str, Any]:
    """Write ``n`` events with ``outbox``, drain them with the relay ``build`` makes, and the ceiling."""
    written = await asyncio.to_thread(prewrite, env.db, outbox, env.topic(), n, per_tx, args.keys)
    config = RelayConfig(batch_size=args.batch_size, window=args.window, poll_interval=1.0)
    relay = build(env.db, env.broker, ref=env.ref, config=config)
    stop = asyncio.Event()
    t0 = time.perf_counter()
    task = asyncio.create_task(relay.run(stop))
    deadline = t0 + args.timeout
    while relay.stats.published < n and time.perf_counter() < deadline and not task.done():
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    stop.set()
    await asyncio.wait_for(task, 30)
    ceiling = await run_ceiling(env, n, args.keys, window=args.window)
    published = relay.stats.published
    return {
        "mode": mode,
        "events": n,
        "per_tx": per_tx,
        "write_s": written,
        "write_tx_per_s": (n / per_tx) / written,
        "relay_s": elapsed,
        "published": published,
        "relay_events_per_s": published / elapsed,
        "relay_tx_per_s": published / per_tx / elapsed,
        "ceiling_events_per_s": ceiling["events_per_s"],
        "ratio_to_ceiling": published / elapsed / ceiling["events_per_s"],
    }


async def compare(args: argparse.Namespace, modes: Sequence[str], one: One) -> dict[str, Any]:
    """Every mode for both transaction shapes, ``--reps`` times; medians against the table relay."""
    width = max(len(m) for m in modes)
    runs = []
    for rep in range(1, args.reps + 1):
        for n, per_tx in ((args.events, args.big), (args.single_events, 1)):
            for mode in modes:
                load_before = load1()
                run = await one(args, mode, n, per_tx)
                run.update(rep=rep, load_before=load_before, load_after=load1())
                runs.append(run)
                print(
                    f"rep {rep} {mode:>{width}} {per_tx:>3}/tx: relay {run['relay_events_per_s']:>7,.0f} ev/s "
                    f"({run['relay_tx_per_s']:,.0f} tx/s), ceiling {run['ceiling_events_per_s']:>7,.0f}, "
                    f"ratio {run['ratio_to_ceiling']:.2f}; write {run['write_tx_per_s']:,.0f} tx/s"
                )
    rows = []
    summary = []
    for per_tx in (args.big, 1):
        table_rate = median([r["relay_events_per_s"] for r in runs if r["mode"] == "table" and r["per_tx"] == per_tx])
        for mode in modes:
            mine = [r for r in runs if r["mode"] == mode and r["per_tx"] == per_tx]
            rate = median([r["relay_events_per_s"] for r in mine])
            ceiling = median([r["ceiling_events_per_s"] for r in mine])
            write = median([r["write_tx_per_s"] for r in mine])
            item = {"mode": mode, "per_tx": per_tx, "relay_events_per_s": rate, "ceiling_events_per_s": ceiling}
            item |= {"vs_table": rate / table_rate, "vs_ceiling": rate / ceiling, "write_tx_per_s": write}
            summary.append(item)
            rows.append(
                [
                    mode,
                    per_tx,
                    f"{rate:,.0f}",
                    f"{rate / per_tx:,.0f}",
                    f"{ceiling:,.0f}",
                    f"{rate / ceiling:.2f}",
                    f"{rate / table_rate:.2f}",
                    f"{write:,.0f}",
                ]
            )
    print(
        table(["mode", "ev/tx", "relay ev/s", "relay tx/s", "ceiling ev/s", "/ceiling", "/table", "write tx/s"], rows)
    )
    return {"params": vars(args), "runs": runs, "summary": summary}


def main(name: str, doc: str | None, modes: Sequence[str], one: One, *, default_db: str | None = None) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    if default_db is not None:
        parser.set_defaults(db=default_db)
    parser.add_argument("--events", type=int, default=20_000, help="events in transactions of --big")
    parser.add_argument("--big", type=int, default=500, help="events per transaction of the first shape")
    parser.add_argument("--single-events", type=int, default=5_000, help="events, one per transaction")
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(compare(args, modes, one))
    result["elapsed_s"] = time.perf_counter() - t0
    path = write_results(name, result, disabled=args.no_json)
    print(f"{time.perf_counter() - t0:.0f}s" + (f"; wrote {path}" if path else ""))
