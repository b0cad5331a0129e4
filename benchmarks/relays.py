"""Many relays: drain 50,000 pre-written events (PostgreSQL -> NATS) with 1 and with 3 relay
processes sharing the outbox through bucket leases; events/s and the ratio 3 relays / 1 relay.

    .venv/bin/python -m benchmarks.relays
    .venv/bin/python -m benchmarks.relays --events 50000 --counts 1,2,3
    .venv/bin/python -m benchmarks.relays --workers --counts 1,2,3   # one `outboxkit relay --workers N`

With ``--workers`` the N relays are the workers of one ``outboxkit relay --workers N`` (N = 1 is a
plain ``outboxkit relay``, the baseline); without it, N separate ``outboxkit relay`` commands.

Each relay is a separate ``outboxkit relay`` process (as in production). The relays start on an
empty outbox and spread the 64 buckets between them; they are then paused (SIGSTOP) while the
events are written, resumed (SIGCONT), and the clock runs until the outbox is drained. CPU time
of the relays, PostgreSQL and nats-server over that interval says which is the limit here.

"cores allow" is min(N x one relay's rate in the same rep, cores / CPU seconds per event spent by
the relays, PostgreSQL and nats-server in this run): what N relays could reach if the machine's
cores were all theirs; "of that" is the measured rate's share of it (1.0: scaling as far as the
cores allow; far below 1 with a high load average: other processes had the cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import add_common_args, bench_env, median, table, write_results
from benchmarks.throughput import prewrite

REPO = Path(__file__).resolve().parents[1]


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return out


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots by the processes alive at both (a backend that
    exited in between would otherwise count negative)."""
    return sum(after[p] - before[p] for p in before.keys() & after.keys())


def _pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


async def run(env: Any, relays: int, n: int, keys: int, *, workers: bool = False) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "outboxkit",
        "relay",
        "--db",
        env.db,
        "--broker",
        env.broker,
        "--schema",
        env.ref.schema,
        "--lease-ttl",
        "30",
        "--poll-interval",
        "0.2",
    ]
    if workers and relays > 1:
        command += ["--workers", str(relays)]
    procs = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220 - started once per run, before the clock
        for _ in range(1 if workers else relays)
    ]
    try:
        leases = env.ref.derived("leases")
        async with await psycopg.AsyncConnection.connect(env.db, autocommit=True) as conn:
            # Wait until the buckets are spread over every relay (rebalancing takes a few rounds).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                cur = await conn.execute(
                    f"SELECT count(DISTINCT owner), count(*) FROM {leases} WHERE expires_at > now()"
                )
                owners, held = await cur.fetchone() or (0, 0)
                if owners == relays and held == 64:
                    break
                await asyncio.sleep(0.2)
            # The processes that relay: the workers of a supervisor (it only waits), or the relays.
            relay_pids = [c for p in procs for c in _children(p.pid)] if workers and relays > 1 else []
            relay_pids = relay_pids or [p.pid for p in procs]
            for pid in relay_pids:
                os.kill(pid, signal.SIGSTOP)
            await asyncio.to_thread(prewrite, env, n, keys, "executemany")
            load = os.getloadavg()
            for pid in relay_pids:
                os.kill(pid, signal.SIGCONT)
            relay_pids += [p.pid for p in procs if p.pid not in relay_pids]
            pg_pids, nats_pids = _pids("postgres:"), _pids("nats-server")
            cpu0 = (_cpu_by_pid(relay_pids), _cpu_by_pid(pg_pids), _cpu_by_pid(nats_pids))
            t0 = time.perf_counter()
            while True:
                cur = await conn.execute(f"SELECT count(*) FROM {env.ref.qualified} WHERE delivered_at IS NULL")
                row = await cur.fetchone()
                if row is not None and row[0] == 0:
                    break
                if time.perf_counter() - t0 > 300:
                    raise TimeoutError("relays did not drain the outbox in 300 s")
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - t0
            cpu1 = (_cpu_by_pid(relay_pids), _cpu_by_pid(pg_pids), _cpu_by_pid(nats_pids))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    cpu = [_cpu_delta(a, b) for a, b in zip(cpu0, cpu1, strict=True)]
    return {
        "mode": "workers" if workers else "processes",
        "load_before": load,
        "load_after": os.getloadavg(),
        "relays": relays,
        "events": n,
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        "cpu_relays_s": cpu[0],
        "cpu_postgres_s": cpu[1],
        "cpu_nats_s": cpu[2],
        "machine_cores": os.cpu_count(),
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for rep in range(args.reps):  # counts interleaved within each rep: load drifts hit all alike
        for count in [int(c) for c in args.counts.split(",")]:
            async with bench_env(args.db, args.broker, notify=True) as env:
                r = await run(env, count, args.events, args.keys, workers=args.workers)
                r["rep"] = rep
                line = (
                    f"  rep {rep}: {count} relay(s): {r['events_per_s']:,.0f} events/s, load {r['load_before'][0]:.1f}"
                )
                print(line, flush=True)
                results.append(r)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--counts", default="1,3")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (counts interleaved within each)")
    parser.add_argument("--workers", action="store_true", help="N relays = one `outboxkit relay --workers N`")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    rows = []
    for r in results:
        one = next((o for o in results if o["relays"] == 1 and o["rep"] == r["rep"]), None)
        ratio = r["events_per_s"] / one["events_per_s"] if one else float("nan")
        r["x_one_relay"] = ratio
        # What the cores allow: N relays at one relay's rate, unless the whole machine's cores,
        # spent at this run's CPU cost per event (relays + PostgreSQL + NATS), give less.
        cost = (r["cpu_relays_s"] + r["cpu_postgres_s"] + r["cpu_nats_s"]) / r["events"]
        machine_bound = (r["machine_cores"] or 1) / cost if cost > 0 else float("inf")
        r["cores_allow_events_per_s"] = min(machine_bound, r["relays"] * one["events_per_s"] if one else machine_bound)
        busy = r["cpu_relays_s"] + r["cpu_postgres_s"] + r["cpu_nats_s"]
        rows.append(
            [r["relays"], r["events_per_s"], f"{ratio:.2f}", f"{r['cpu_relays_s']:.1f}", f"{r['cpu_postgres_s']:.1f}",
             f"{r['cpu_nats_s']:.1f}", f"{busy / (r['seconds'] * (r['machine_cores'] or 1)):.0%}",
             f"{r['cores_allow_events_per_s']:,.0f}", f"{r['events_per_s'] / r['cores_allow_events_per_s']:.2f}",
             f"{r['load_before'][0]:.1f}"]
        )  # fmt: skip
    head = ["workers" if args.workers else "relays", "events/s", "x one relay", "cpu relays s", "cpu pg s"]
    print(table([*head, "cpu nats s", "machine busy", "cores allow", "of that", "load 1m"], rows))
    for count in sorted({r["relays"] for r in results}):
        ratios = [r["x_one_relay"] for r in results if r["relays"] == count]
        loads = [r["load_before"][0] for r in results if r["relays"] == count]
        span = f"load {min(loads):.1f}-{max(loads):.1f}"
        print(f"{count}: median x one relay {median(ratios):.2f} over {len(ratios)} rep(s), {span}")
    path = write_results("relays", {"params": vars(args), "results": results}, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
