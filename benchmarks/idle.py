"""CPU an idle relay burns, per store: % of one core over ``--seconds`` with nothing to relay.

For each store (SQLite, PostgreSQL, MariaDB) a relay runs in its own process, exactly as
``benchmarks.latency`` starts it (``build_relay`` with the default ``RelayConfig``: poll_interval
1 s, to NATS JetStream), on an empty outbox: PostgreSQL with its NOTIFY trigger (the relay LISTENs),
MariaDB with its own wake-up (a fingerprint of the pending rows polled every 2-50 ms, 150 ms after
10 s quiet), SQLite with its file-change (inotify) wake-up.
After ``--settle`` seconds the relay's user + system CPU time
(``/proc/<pid>/stat``, every thread) is read, then again ``--seconds`` later: the difference over the
wall time is the share of a core. The floor, measured the same way in the same run, is a Python
process sleeping in ``asyncio`` for the same time. Issue 12 target: under 1% of a core on every store.

The commit -> receive latency of the SQLite wake-up is measured by
``python -m benchmarks.latency --db sqlite:///x --rates 200,1000 --modes floor,notify``.

    .venv/bin/python -m benchmarks.idle
    .venv/bin/python -m benchmarks.idle --seconds 20 --stores sqlite,postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MARIADB_URL,
    NATS_URL,
    PG_URL,
    Env,
    drop_schema,
    migrate_outbox,
    new_tag,
    table,
    write_results,
)
from outboxkit.stores.base import TableRef

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
ALL_STORES = ("sqlite", "postgresql", "mariadb")
SLEEPER = "import asyncio, sys; print('ready', flush=True); asyncio.run(asyncio.sleep(10**6))"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


@contextlib.asynccontextmanager
async def outbox_for(store: str, args: argparse.Namespace) -> AsyncIterator[tuple[str, str]]:
    """(database URL, schema or "") of a fresh, empty outbox on ``store``."""
    if store == "sqlite":
        with tempfile.TemporaryDirectory(prefix="outboxkit-bench-") as tmp:
            url = f"sqlite:///{tmp}/idle.db"
            await asyncio.to_thread(migrate_outbox, Env("", TableRef("outbox"), url, args.broker), notify=True)
            yield url, ""
        return
    db = args.pg if store == "postgresql" else args.mariadb
    tag = new_tag()
    try:
        await asyncio.to_thread(migrate_outbox, Env(tag, TableRef("outbox", tag), db, args.broker), notify=True)
        yield db, tag
    finally:
        await asyncio.to_thread(drop_schema, db, tag)


async def measure(cmd: list[str], args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=REPO, env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"child failed to start: {line!r}")
        await asyncio.sleep(args.settle)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
    return {"cpu_s": c1 - c0, "wall_s": t1 - t0, "core_percent": 100 * (c1 - c0) / (t1 - t0)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    floor = await measure([sys.executable, "-c", SLEEPER], args)
    floor["store"] = "floor (idle asyncio process)"
    print(f"  floor: {floor['core_percent']:.2f}% of a core (load {os.getloadavg()[0]:.1f})", flush=True)
    for store in args.stores.split(","):
        async with outbox_for(store, args) as (db, schema):
            cmd = [sys.executable, "-m", "benchmarks.latency", "--relay-child", db, args.broker, schema, "1.0", "1000"]
            r = await measure(cmd, args)
        r["store"] = store
        results.append(r)
        print(
            f"  {store}: {r['core_percent']:.2f}% of a core ({r['cpu_s']:.3f} CPU-s in {r['wall_s']:.1f} s, "
            f"load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    return {"params": vars(args), "floor": floor, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default=",".join(ALL_STORES), help="comma-separated: " + ",".join(ALL_STORES))
    parser.add_argument("--pg", default=PG_URL)
    parser.add_argument("--mariadb", default=MARIADB_URL)
    parser.add_argument("--broker", default=NATS_URL)
    parser.add_argument("--seconds", type=float, default=20.0, help="idle time measured per store")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after start-up before measuring")
    parser.add_argument("--no-json", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print()
    rows = [
        [
            r["store"],
            round(r["core_percent"], 2),
            round(result["floor"]["core_percent"], 2),
            "met" if r["core_percent"] < 1 else "MISSED",
        ]
        for r in result["results"]
    ]
    print(table(["store", "% of a core", "floor %", "target<1%"], rows))
    path = write_results("idle", result, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
