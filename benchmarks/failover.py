"""Fail-over under fire: how long events wait while relays die and freeze.

Three ``outboxkit relay`` processes share one PostgreSQL outbox (bucket leases, default TTL 6 s).
A writer commits about 2,000 events/s (transactions of 20, 500 keys); meanwhile relay 1 or 2
(seeded choice) is SIGKILLed every 1.2-1.8 s and started again at once, as a supervisor would,
and relay 3 is SIGSTOPped for 15 s. Then the writer stops, the outbox drains, and every committed
event's first copy on the stream says how long it waited (commit -> JetStream's store time): max,
p99, and how many waited over 10 s; lost, duplicates and per-key order violations are counted too.

    .venv/bin/python -m benchmarks.failover                    # stable owners (--owner per relay slot)
    .venv/bin/python -m benchmarks.failover --owners random    # a new owner name at every start

With ``--owners stable`` each relay slot runs as ``--owner <tag>-rN`` across its restarts (what
``relay --workers N`` and any supervisor that names its relays do): a restarted relay finds its own
leases and takes them back at once, at a new epoch. With ``random`` (the default before owners could
be named) a restarted relay is a stranger, and its predecessor's buckets wait for their TTL.

"spread" is how long after start the 64 buckets were held by all three relays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import add_common_args, bench_env, nats_connect, percentile, table, write_results
from outboxkit.core.tally import Delivery, tally
from outboxkit.emit import Outbox
from outboxkit.testing import RelayProcess

KEYS = 500
BATCH = 20


def _writer(env: Any, rate: float, stop: threading.Event, out: dict[str, tuple[str, int, float]]) -> None:
    """Commit ``rate`` events/s in transactions of ``BATCH`` until ``stop``; ``out``: id -> (key, n, commit time)."""
    outbox = Outbox(table=env.ref.table, schema=env.ref.schema)
    counters: dict[str, int] = defaultdict(int)
    rng = random.Random(7)
    interval = BATCH / rate
    next_at = time.monotonic()
    with psycopg.connect(env.db, autocommit=True) as conn:
        while not stop.is_set():
            ids = []
            with conn.transaction():
                for _ in range(BATCH):
                    key = f"k{rng.randrange(KEYS)}"
                    counters[key] += 1
                    n = counters[key]
                    ids.append((outbox.emit(conn, f"{env.subject_prefix}.orders", {"k": key, "n": n}, key=key), key, n))
            now = time.time()
            for event_id, key, n in ids:
                out[event_id] = (key, n, now)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)


async def _read_stream(url: str, stream: str) -> list[tuple[str, float]]:
    """(event id, store time) of every message, in stream order."""
    nc = await nats_connect(url)
    out: list[tuple[str, float]] = []
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.subscribe(">", stream=stream, ordered_consumer=True)
        while len(out) < total:
            msg = await sub.next_msg(timeout=10)
            headers = msg.headers or {}
            out.append((headers.get("Nats-Msg-Id") or headers.get("ce-id", ""), msg.metadata.timestamp.timestamp()))
        await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def _spread(conn: psycopg.AsyncConnection[Any], leases: str, relays: int, timeout: float = 60) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        cur = await conn.execute(f"SELECT count(DISTINCT owner), count(*) FROM {leases} WHERE expires_at > now()")
        owners, held = await cur.fetchone() or (0, 0)
        if owners == relays and held == 64:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    return float("nan")


async def run(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    async with bench_env(args.db, args.broker) as env:
        relays = []
        for i in range(3):
            extra = ["--schema", env.ref.schema, "--lease-ttl", str(args.lease_ttl)]
            if args.owners == "stable":
                extra += ["--owner", f"{env.tag}-r{i + 1}"]
            relays.append(RelayProcess(env.db, env.broker, *extra, log_path=str(logs / f"relay{i + 1}.log")))
        committed: dict[str, tuple[str, int, float]] = {}
        stop = threading.Event()
        kills = 0
        try:
            async with await psycopg.AsyncConnection.connect(env.db, autocommit=True) as conn:
                for r in relays:
                    r.start()
                spread = await _spread(conn, env.ref.derived("leases"), 3)
                writer = threading.Thread(target=_writer, args=(env, args.rate, stop, committed), daemon=True)
                t0 = time.monotonic()
                writer.start()
                frozen = relays[2]
                stopped_at = args.stop_at
                paused = False
                next_kill = t0 + 2.0
                while time.monotonic() - t0 < args.seconds:
                    now = time.monotonic()
                    if not paused and now - t0 >= stopped_at and frozen.proc is not None:
                        os.kill(frozen.proc.pid, signal.SIGSTOP)
                        paused = True
                    if paused and now - t0 >= stopped_at + args.stop_for and frozen.proc is not None:
                        os.kill(frozen.proc.pid, signal.SIGCONT)
                        paused = False
                        stopped_at = float("inf")
                    if now >= next_kill:
                        victim = relays[rng.randrange(2)]
                        victim.kill()
                        victim.start()  # the supervisor's restart, at once
                        kills += 1
                        next_kill = now + rng.uniform(1.2, 1.8)
                    await asyncio.sleep(0.05)
                stop.set()
                writer.join()
                if paused and frozen.proc is not None:
                    os.kill(frozen.proc.pid, signal.SIGCONT)
                drain0 = time.monotonic()
                while time.monotonic() - drain0 < 300:
                    cur = await conn.execute(f"SELECT count(*) FROM {env.ref.qualified} WHERE delivered_at IS NULL")
                    row = await cur.fetchone()
                    if row is not None and row[0] == 0:
                        break
                    await asyncio.sleep(0.2)
        finally:
            stop.set()
            exits = [r.stop() for r in relays]
        received = await _read_stream(env.broker, env.stream)
    first: dict[str, float] = {}
    for event_id, stored in received:
        first.setdefault(event_id, stored)
    waits = [first[i] - c[2] for i, c in committed.items() if i in first]
    result = tally({i: (c[0], c[1]) for i, c in committed.items()}, [Delivery(i, None, None) for i, _ in received])
    return {
        "owners": args.owners,
        "lease_ttl": args.lease_ttl,
        "seconds": args.seconds,
        "rate": args.rate,
        "kills": kills,
        "stop_for": args.stop_for,
        "spread_s": spread,
        "committed": len(committed),
        "lost": result.lost,
        "duplicates": result.duplicates,
        "order_violations": result.order_violations,
        "wait_max_s": max(waits, default=float("nan")),
        "wait_p99_s": percentile(waits, 99),
        "wait_p50_s": percentile(waits, 50),
        "over_10s": sum(1 for w in waits if w > 10),
        "relay_exits": exits,
        "load_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--owners", choices=("stable", "random"), default="stable")
    parser.add_argument("--seconds", type=float, default=40.0, help="writing time, with the faults (%(default)s)")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s written (%(default)s)")
    parser.add_argument("--lease-ttl", type=float, default=6.0)
    parser.add_argument("--stop-at", type=float, default=8.0, help="when relay 3 is SIGSTOPped (s)")
    parser.add_argument("--stop-for", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--logs", default=None, help="directory for the relays' logs (default: a temporary one)")
    args = parser.parse_args()
    logs = Path(args.logs or f"/tmp/outboxkit-failover-{os.getpid()}")
    logs.mkdir(parents=True, exist_ok=True)
    res = asyncio.run(run(args, logs))
    keys = ("owners", "kills", "spread_s", "committed", "lost", "duplicates", "order_violations")
    keys += ("wait_p50_s", "wait_p99_s", "wait_max_s", "over_10s")
    print(table(keys, [[res[k] for k in keys]]))
    print(json.dumps({"relay_exits": res["relay_exits"], "load_after": res["load_after"], "logs": str(logs)}))
    path = write_results("failover", {"params": vars(args), **res}, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
