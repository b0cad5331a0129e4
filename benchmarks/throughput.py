"""Relay throughput, PostgreSQL or MariaDB -> NATS JetStream, against the raw nats-py ceiling.

For each repetition and each window size:

1. relay: pre-write N events into a fresh outbox (transactions of 500 rows, K distinct keys round
   robin, ~200-byte JSON payloads), then run the in-process relay
   (``outboxkit.relay.process.build_relay``) until the outbox has 0 pending rows; events/s.
2. ceiling: nats-py alone publishes N messages of the same subject, payload and header size with
   ``js.publish_async`` (PubAck awaited for every message) and the same in-flight window,
   to the same kind of stream; events/s.

Reports the median over repetitions and the ratio relay / ceiling (target >= 0.6).

    .venv/bin/python -m benchmarks.throughput
    .venv/bin/python -m benchmarks.throughput --events 20000 --reps 1 --windows 1000
    .venv/bin/python -m benchmarks.throughput --db mysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import uuid_utils

from benchmarks.common import (
    Env,
    add_common_args,
    bench_env,
    is_postgres,
    key_for,
    load1,
    nats_connect,
    payload,
    purge_stream,
    relay_run,
    report_windows,
    summarize_windows,
)
from outboxkit import Outbox
from outboxkit.core.envelope import OutboxEvent, binary_headers
from outboxkit.stores.postgres import PostgresSchema
from outboxkit.stores.registry import database_for

TXN_ROWS = 500


def _encoded(i: int) -> bytes:
    return json.dumps(payload(i), separators=(",", ":")).encode()


def prewrite(env: Env, n: int, keys: int, method: str) -> float:
    """Empty the outbox, write ``n`` events in transactions of 500; returns seconds taken."""
    if not is_postgres(env.db):
        return prewrite_dbapi(env, n, keys)
    topic = env.topic()
    t0 = time.perf_counter()
    with psycopg.connect(env.db) as conn:
        with conn.transaction():
            conn.execute(f"TRUNCATE {env.ref.qualified} RESTART IDENTITY")
        if method == "emit":
            outbox = Outbox(schema=env.ref.schema)
            for start in range(0, n, TXN_ROWS):
                with conn.transaction():
                    for i in range(start, min(n, start + TXN_ROWS)):
                        outbox.emit(conn, topic, payload(i), key=key_for(i, keys))
        else:
            # Same INSERT text as emit(), sent with executemany (pipelined by psycopg): the rows are
            # what emit() writes (UUIDv7 id, JSON payload, empty headers), only faster to produce.
            sql = PostgresSchema().insert_sql(env.ref, "format")
            for start in range(0, n, TXN_ROWS):
                rows = [
                    (
                        str(uuid_utils.uuid7()),
                        topic,
                        key_for(i, keys),
                        None,
                        None,
                        _encoded(i),
                        "application/json",
                        "{}",
                    )
                    for i in range(start, min(n, start + TXN_ROWS))
                ]
                with conn.transaction():
                    conn.cursor().executemany(sql, rows)
    with psycopg.connect(env.db, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {env.ref.qualified}")
    return time.perf_counter() - t0


def prewrite_dbapi(env: Env, n: int, keys: int) -> float:
    """The same rows through the database's own sync driver (``Database.connect``): emit()'s INSERT
    text, sent with the DB-API ``executemany`` (PyMySQL turns it into multi-row INSERTs)."""
    database = database_for(env.db)
    table, topic = env.ref.quoted(database.quote), env.topic()
    sql = database.schema().insert_sql(env.ref, database.paramstyle)
    t0 = time.perf_counter()
    conn = database.connect(env.db, label="outboxkit-bench")
    try:
        conn.execute(f"DELETE FROM {table}")
        cursor = getattr(conn, "native", conn).cursor()
        for start in range(0, n, TXN_ROWS):
            rows = [
                (str(uuid_utils.uuid7()), topic, key_for(i, keys), None, None, _encoded(i), "application/json", "{}")
                for i in range(start, min(n, start + TXN_ROWS))
            ]
            conn.execute(database.begin_sql)
            cursor.executemany(sql, rows)
            conn.execute("COMMIT")
        conn.execute(f"ANALYZE TABLE {table}" if database.quote == "`" else f"ANALYZE {table}")
    finally:
        conn.close()
    return time.perf_counter() - t0


async def _pending(conn: psycopg.AsyncConnection[Any], env: Env) -> int:
    cur = await conn.execute(f"SELECT count(*) FROM {env.ref.qualified} WHERE delivered_at IS NULL AND dead_at IS NULL")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def stream_messages(env: Env) -> int:
    nc = await nats_connect(env.broker)
    try:
        info = await nc.jetstream().stream_info(env.stream)
        return int(info.state.messages)
    finally:
        await nc.close()


async def run_relay(env: Env, n: int, *, window: int, batch_size: int, timeout: float) -> dict[str, Any]:
    result = await relay_run(env, n, window=window, batch_size=batch_size, timeout=timeout)
    result["stream_messages"] = await stream_messages(env)
    return result


async def run_ceiling(env: Env, n: int, keys: int, *, window: int) -> dict[str, Any]:
    topic = env.topic()
    now = datetime.now(UTC)
    # Same subject, payload and headers (CloudEvents binary headers + Nats-Msg-Id) as the relay
    # sends; built before the clock starts, so this is nats-py + server alone.
    messages = []
    for i in range(n):
        event = OutboxEvent(
            seq=i + 1,
            id=str(uuid_utils.uuid7()),
            topic=topic,
            payload=_encoded(i),
            key=key_for(i, keys),
            created_at=now,
        )
        headers = binary_headers(event, "/outboxkit")
        headers["Nats-Msg-Id"] = event.id
        messages.append((topic, event.payload, headers))
    nc = await nats_connect(env.broker)
    try:
        js = nc.jetstream(publish_async_max_pending=window)
        t0 = time.perf_counter()
        # No wait_stall, like the relay's publisher: with it nats-py wraps every call in a Task.
        futures = [await js.publish_async(s, p, headers=h) for s, p, h in messages]
        acks = await asyncio.gather(*futures, return_exceptions=True)
        elapsed = time.perf_counter() - t0
    finally:
        await nc.close()
    errors = sum(1 for a in acks if isinstance(a, BaseException))
    return {"seconds": elapsed, "events": n - errors, "events_per_s": (n - errors) / elapsed, "errors": errors}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    windows = [int(w) for w in args.windows.split(",")]
    runs: list[dict[str, Any]] = []
    async with bench_env(args.db, args.broker, notify=True) as env:
        print(
            f"schema/stream: {env.tag} / {env.stream}; {args.events:,} events, {args.keys:,} keys, "
            f"batch_size {args.batch_size}, windows {windows}, {args.reps} reps"
        )
        for rep in range(1, args.reps + 1):
            for window in windows:
                load_before = load1()  # the rep's load, before and after: quiet or not
                await purge_stream(env.broker, env.stream)
                pw = await asyncio.to_thread(prewrite, env, args.events, args.keys, args.prewrite)
                relay = await run_relay(
                    env, args.events, window=window, batch_size=args.batch_size, timeout=args.timeout
                )
                await purge_stream(env.broker, env.stream)
                ceiling = await run_ceiling(env, args.events, args.keys, window=window)
                run = {
                    "rep": rep,
                    "load_before": load_before,
                    "load_after": load1(),
                    "window": window,
                    "batch_size": args.batch_size,
                    "prewrite_s": pw,
                    "relay": relay,
                    "ceiling": ceiling,
                    "ratio": relay["events_per_s"] / ceiling["events_per_s"],
                }
                runs.append(run)
                print(
                    f"  rep {rep} window {window:>5}: relay {relay['events_per_s']:>8,.0f}/s "
                    f"({relay['seconds']:.2f}s, {relay['batches']} batches, stream {relay['stream_messages']:,}, "
                    f"left {relay['pending_left']})  ceiling {ceiling['events_per_s']:>8,.0f}/s  "
                    f"ratio {run['ratio']:.2f}  [prewrite {pw:.1f}s]"
                )
    summary = summarize_windows(runs, windows, args.batch_size)
    return {"params": vars(args), "runs": runs, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--windows", default="1000", help="comma-separated relay windows")
    parser.add_argument("--batch-size", type=int, default=2000, help="relay rows per fetch")
    parser.add_argument(
        "--prewrite",
        choices=["executemany", "emit"],
        default="executemany",
        help="how to fill the outbox (emit(): the public API, ~4x slower to prepare)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one relay run after this")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    report_windows("throughput", result, t0, disabled=args.no_json)


if __name__ == "__main__":
    main()
