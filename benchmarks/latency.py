"""End-to-end latency: COMMIT returned -> message received from the JetStream stream.

Three processes, so none steals the GIL from another's timestamps:

* writer: psycopg (sync), one event per transaction (``emit()`` then COMMIT) at a steady rate;
  records ``time.monotonic()`` right after COMMIT returns, per event id;
* relay: ``build_relay(...)`` + ``relay.run(stop)`` in its own process (as in production);
* this process: an ordered JetStream push consumer on the stream, records ``time.monotonic()`` in
  the message callback, keyed by the ``ce-id`` header.

CLOCK_MONOTONIC is system-wide on Linux, so the two timestamps are comparable across processes.

Two modes:

* ``notify``: NOTIFY trigger on the outbox, relay LISTENs, poll_interval 1.0 s (the default setup);
* ``poll``: outbox migrated with ``notify=False`` (no trigger), relay polls every ``--poll-interval``;
  on MariaDB (``--db mysql://...``), which has no notifications, this is the store's own wake-up
  (a fingerprint of the pending rows polled every 2-50 ms) with ``--poll-interval`` as the fallback;
* ``inline``: as ``notify``, plus the writer hands each committed id to an ``InlinePublisher``
  (publish right after commit, issue 4), the relay being the safety net.

    .venv/bin/python -m benchmarks.latency
    .venv/bin/python -m benchmarks.latency --rate 500 --duration 20 --modes notify,poll
    .venv/bin/python -m benchmarks.latency --db mysql://root@127.0.0.1:3306/test --modes poll --poll-interval 1.0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_common_args,
    bench_env,
    nats_connect,
    percentile,
    table,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent


# -- child: relay ---------------------------------------------------------------------------------
async def _relay_child(db: str, broker: str, schema: str, poll_interval: float, window: int) -> None:
    from outboxkit.relay.loop import RelayConfig
    from outboxkit.relay.process import build_relay
    from outboxkit.stores.base import TableRef

    relay = build_relay(
        db, broker, ref=TableRef("outbox", schema), config=RelayConfig(poll_interval=poll_interval, window=window)
    )
    first = await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await relay.run(stop, first=first)
    s = relay.stats
    print(json.dumps({"published": s.published, "batches": s.batches, "failed": s.failed_attempts}), flush=True)


# -- child: writer --------------------------------------------------------------------------------
def _writer_child(db: str, schema: str, topic: str, rate: float, duration: float, out: str, broker: str = "") -> None:
    import psycopg

    from benchmarks.common import is_postgres, key_for, payload
    from outboxkit import Outbox
    from outboxkit.relay.inline import InlinePublisher
    from outboxkit.stores.base import TableRef
    from outboxkit.stores.registry import database_for

    outbox = Outbox(schema=schema)
    inline = InlinePublisher(db, broker, ref=TableRef("outbox", schema)).start() if broker else None
    n = int(rate * duration)
    commits: dict[str, float] = {}
    behind = 0
    # PostgreSQL: psycopg's transaction(); other databases: their own sync driver, BEGIN ... COMMIT.
    conn: Any = psycopg.connect(db) if is_postgres(db) else database_for(db).connect(db)
    try:
        t0 = time.monotonic() + 0.2
        for i in range(n):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 0.01:
                behind += 1
            if is_postgres(db):
                with conn.transaction():
                    event_id = outbox.emit(conn, topic, payload(i), key=key_for(i, 1000))
            else:
                conn.execute("BEGIN")
                event_id = outbox.emit(conn, topic, payload(i), key=key_for(i, 1000))
                conn.execute("COMMIT")
            commits[event_id] = time.monotonic()  # COMMIT has returned
            if inline is not None:
                inline.submit([event_id])  # returns at once; publishes on its own thread
        elapsed = time.monotonic() - t0
    finally:
        conn.close()
    if inline is not None:
        inline.close()
    Path(out).write_text(json.dumps({"commits": commits, "elapsed": elapsed, "behind": behind}))


# -- parent ---------------------------------------------------------------------------------------
def _child(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.latency", *args]


async def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    notify = mode in ("notify", "inline")
    poll = 1.0 if notify else args.poll_interval
    env_vars = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    async with bench_env(args.db, args.broker, notify=notify) as env:
        received: dict[str, float] = {}
        duplicates = 0

        async def on_msg(msg: Any) -> None:
            nonlocal duplicates
            now = time.monotonic()
            event_id = (msg.headers or {}).get("ce-id", "")
            if event_id in received:
                duplicates += 1
            else:
                received[event_id] = now

        nc = await nats_connect(env.broker)
        sub = await nc.jetstream().subscribe(
            f"{env.subject_prefix}.>", stream=env.stream, ordered_consumer=True, cb=on_msg
        )
        relay = await asyncio.create_subprocess_exec(
            *_child("--relay-child", env.db, env.broker, env.tag, str(poll), str(args.window)),
            cwd=REPO,
            env=env_vars,
            stdout=subprocess.PIPE,
        )
        try:
            assert relay.stdout is not None
            line = await asyncio.wait_for(relay.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"relay child failed to start: {line!r}")
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                out = tmp.name
            try:
                writer = await asyncio.create_subprocess_exec(
                    *_child(
                        "--writer-child",
                        env.db,
                        env.tag,
                        env.topic(),
                        str(args.rate),
                        str(args.duration),
                        out,
                        env.broker if mode == "inline" else "",
                    ),
                    cwd=REPO,
                    env=env_vars,
                )
                rc = await writer.wait()
                if rc != 0:
                    raise RuntimeError(f"writer child exited with {rc}")
                w = json.loads(await asyncio.to_thread(Path(out).read_text))
            finally:
                os.unlink(out)
            commits: dict[str, float] = w["commits"]
            # Stragglers: wait until everything arrived or a grace period passed.
            deadline = time.monotonic() + poll + 5
            while len(set(commits) & received.keys()) < len(commits) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            relay.send_signal(signal.SIGTERM)
            try:
                tail = await asyncio.wait_for(relay.communicate(), 30)
                relay_stats = json.loads(tail[0].decode().strip().splitlines()[-1]) if tail[0] else {}
            except (TimeoutError, ValueError, IndexError):
                relay.kill()
                relay_stats = {}
            await sub.unsubscribe()
            await nc.close()
    lat = [(received[i] - t) * 1000 for i, t in commits.items() if i in received]
    missing = len(commits) - len(lat)
    return {
        "mode": mode,
        "poll_interval": poll,
        "notify_trigger": notify,
        "events": len(commits),
        "achieved_rate": len(commits) / w["elapsed"],
        "writer_behind_10ms": w["behind"],
        "received": len(lat),
        "missing": missing,
        "duplicates": duplicates,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
        # Coarse histogram: a mass near poll_interval means the relay slept through wake-ups.
        "histogram_ms": {
            f"<{hi}": sum(1 for x in lat if lo <= x < hi)
            for lo, hi in [(0, 10), (10, 50), (50, 100), (100, 250), (250, 500), (500, 900), (900, 10**9)]
        },
        "relay": relay_stats,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for mode in args.modes.split(","):
        print(f"mode {mode}: {args.rate:g} events/s for {args.duration:g}s ...", flush=True)
        r = await run_mode(args, mode)
        print(
            f"  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  max {r['max_ms']:.1f} ms  "
            f"({r['received']:,}/{r['events']:,} received, {r['achieved_rate']:.0f}/s written)",
            flush=True,
        )
        results.append(r)
    return {"params": vars(args), "results": results}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--relay-child":
        db, broker, schema, poll, window = sys.argv[2:7]
        asyncio.run(_relay_child(db, broker, schema, float(poll), int(window)))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--writer-child":
        db, schema, topic, rate, duration, out = sys.argv[2:8]
        _writer_child(db, schema, topic, float(rate), float(duration), out, *sys.argv[8:9])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--rate", type=float, default=500.0, help="events (= transactions) per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of writing per mode")
    parser.add_argument("--modes", default="notify,poll,inline", help="comma-separated: notify, poll, inline")
    parser.add_argument("--poll-interval", type=float, default=0.1, help="relay poll interval in poll mode")
    parser.add_argument("--window", type=int, default=1000, help="relay in-flight window")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print()
    rows = []
    for r in result["results"]:
        target = ""
        if r["mode"] in ("notify", "inline"):
            target = "met" if r["p50_ms"] <= 10 and r["p99_ms"] <= 50 else "MISSED"
        rows.append(
            [
                r["mode"],
                r["poll_interval"],
                r["events"],
                r["received"],
                r["p50_ms"],
                r["p95_ms"],
                r["p99_ms"],
                r["max_ms"],
                target,
            ]
        )
    print(
        table(["mode", "poll s", "events", "received", "p50 ms", "p95 ms", "p99 ms", "max ms", "p50<=10,p99<=50"], rows)
    )
    path = write_results("latency", result, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
