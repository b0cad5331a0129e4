"""Relay throughput, PostgreSQL -> Redis Streams, against the raw redis-py ceiling.

For each repetition and each window size:

1. relay: pre-write N events into a fresh outbox (as benchmarks/throughput.py does), run the
   in-process relay (``build_relay`` with a ``redis://`` URL) until the outbox has 0 pending rows.
2. ceilings: redis-py alone XADDs the same N entries (same stream, fields and payloads) in
   batches of ``window`` commands, each batch's replies awaited before the next is sent — the same
   in-flight window, confirmations and ordering the adapter gives. Twice: ``pipeline`` (redis-py's
   Pipeline API, the usual way) and ``raw`` (pre-encoded RESP on one redis-py connection, what the
   adapter does, and the faster of the two). The ratio is relay / the faster ceiling.

Reports the median over repetitions and the ratio (target >= 0.6). Uses its own
schema ``bench_<hex>`` and stream ``bench_<hex>.orders.created``, both removed at the end.

    .venv/bin/python -m benchmarks.throughput_redis
    .venv/bin/python -m benchmarks.throughput_redis --events 20000 --reps 1 --windows 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import uuid_utils
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from benchmarks.common import (
    PG_URL,
    Env,
    drop_schema,
    key_for,
    load1,
    migrate_outbox,
    new_tag,
    payload,
    relay_run,
    report_windows,
    summarize_windows,
)
from benchmarks.throughput import prewrite
from outboxkit.brokers.redis import _pack, entry_fields
from outboxkit.core.envelope import OutboxEvent
from outboxkit.stores.base import TableRef

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


async def stream_length(env: Env) -> int:
    client = Redis.from_url(env.broker)
    try:
        return int(await client.xlen(env.topic()))
    finally:
        await client.aclose()


async def drop_stream(env: Env) -> None:
    client = Redis.from_url(env.broker)
    try:
        await client.delete(env.topic())
    finally:
        await client.aclose()


async def run_relay(env: Env, n: int, *, window: int, batch_size: int, timeout: float) -> dict[str, Any]:
    result = await relay_run(env, n, window=window, batch_size=batch_size, timeout=timeout)
    result["stream_entries"] = await stream_length(env)
    return result


def _encoded(i: int) -> bytes:
    return json.dumps(payload(i), separators=(",", ":")).encode()


async def run_ceiling(env: Env, n: int, keys: int, *, window: int, raw: bool) -> dict[str, Any]:
    topic = env.topic()
    now = datetime.now(UTC)
    # The same fields the adapter writes, built before the clock starts: redis-py + server alone.
    commands = [
        (
            "XADD",
            topic,
            "*",
            *entry_fields(
                OutboxEvent(
                    seq=i + 1,
                    id=str(uuid_utils.uuid7()),
                    topic=topic,
                    payload=_encoded(i),
                    key=key_for(i, keys),
                    created_at=now,
                ),
                "/outboxkit",
            ),
        )
        for i in range(n)
    ]
    client = Redis.from_url(env.broker)
    errors = 0
    try:
        if raw:
            packed = [_pack(c) for c in commands]
            conn = client.connection_pool.make_connection()
            await conn.connect()
            t0 = time.perf_counter()
            for start in range(0, n, window):
                chunk = packed[start : start + window]
                await conn.send_packed_command(b"".join(chunk), check_health=False)
                for _ in chunk:
                    try:
                        await conn.read_response()
                    except ResponseError:
                        errors += 1
            elapsed = time.perf_counter() - t0
            await conn.disconnect()
        else:
            t0 = time.perf_counter()
            for start in range(0, n, window):
                pipe = client.pipeline(transaction=False)
                for command in commands[start : start + window]:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
                errors += sum(1 for r in replies if isinstance(r, Exception))
            elapsed = time.perf_counter() - t0
    finally:
        await client.aclose()
    return {"seconds": elapsed, "events": n - errors, "events_per_s": (n - errors) / elapsed, "errors": errors}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    windows = [int(w) for w in args.windows.split(",")]
    runs: list[dict[str, Any]] = []
    tag = new_tag()
    env = Env(tag=tag, ref=TableRef("outbox", tag), db=args.db, broker=args.broker)
    try:
        await asyncio.to_thread(migrate_outbox, env, notify=True)
        print(
            f"schema/stream: {env.tag} / {env.topic()}; {args.events:,} events, {args.keys:,} keys, "
            f"batch_size {args.batch_size}, windows {windows}, {args.reps} reps"
        )
        for rep in range(1, args.reps + 1):
            for window in windows:
                load_before = load1()  # the rep's load, before and after: quiet or not
                await drop_stream(env)
                pw = await asyncio.to_thread(prewrite, env, args.events, args.keys, "executemany")
                relay = await run_relay(
                    env, args.events, window=window, batch_size=args.batch_size, timeout=args.timeout
                )
                ceilings = {}
                for kind in ("pipeline", "raw"):
                    await drop_stream(env)
                    ceilings[kind] = await run_ceiling(env, args.events, args.keys, window=window, raw=kind == "raw")
                ceiling = max(ceilings.values(), key=lambda c: c["events_per_s"])
                run = {
                    "rep": rep,
                    "load_before": load_before,
                    "load_after": load1(),
                    "window": window,
                    "batch_size": args.batch_size,
                    "prewrite_s": pw,
                    "relay": relay,
                    "ceiling": ceiling,
                    "ceiling_pipeline": ceilings["pipeline"],
                    "ceiling_raw": ceilings["raw"],
                    "ratio": relay["events_per_s"] / ceiling["events_per_s"],
                }
                runs.append(run)
                print(
                    f"  rep {rep} window {window:>5}: relay {relay['events_per_s']:>8,.0f}/s "
                    f"({relay['seconds']:.2f}s, {relay['batches']} batches, stream {relay['stream_entries']:,}, "
                    f"left {relay['pending_left']})  ceiling pipeline {ceilings['pipeline']['events_per_s']:>8,.0f}/s "
                    f"raw {ceilings['raw']['events_per_s']:>8,.0f}/s  "
                    f"ratio {run['ratio']:.2f}  [prewrite {pw:.1f}s]"
                )
    finally:
        await drop_stream(env)
        await asyncio.to_thread(drop_schema, args.db, tag)
    summary = summarize_windows(runs, windows, args.batch_size)
    return {"params": vars(args), "runs": runs, "summary": summary}


async def _redis_info(url: str) -> dict[str, Any]:
    client = Redis.from_url(url)
    try:
        info = await client.info("server")
        persistence = await client.info("persistence")
        return {"redis": info.get("redis_version"), "redis_aof_enabled": persistence.get("aof_enabled")}
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=PG_URL, help="PostgreSQL URL (default %(default)s)")
    parser.add_argument("--broker", default=REDIS_URL, help="Redis URL (default %(default)s)")
    parser.add_argument("--no-json", action="store_true", help="do not write benchmarks/results/*.json")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--windows", default="1000", help="comma-separated relay windows")
    parser.add_argument("--batch-size", type=int, default=2000, help="relay rows per fetch")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one relay run after this")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    result["broker"] = asyncio.run(_redis_info(args.broker))
    report_windows("throughput_redis", result, t0, disabled=args.no_json)


if __name__ == "__main__":
    main()
