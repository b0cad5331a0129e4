"""Relay throughput, PostgreSQL -> RabbitMQ, against the raw aio-pika/aiormq ceiling.

For each repetition and each window size:

1. relay: pre-write N events into a fresh outbox (transactions of 500 rows, K keys round robin,
   ~200-byte JSON payloads; ``benchmarks.throughput.prewrite``), then run the in-process relay with an
   ``amqp://`` broker URL until the outbox has 0 pending rows; events/s.
2. ceiling: the same client (an aio-pika robust connection, a confirm-mode channel, aiormq
   ``basic_publish``) publishes N messages with the same routing key, body, properties and headers
   (``RabbitMQPublisher``'s own ``amqp_properties``), ``mandatory``, confirms awaited for each, at most
   ``window`` unconfirmed at once; events/s.

Both go to a durable topic exchange and one durable quorum queue bound with ``<tag>.#`` (the settings
docs/buses/rabbitmq.md recommends), purged between runs. Reports medians and the ratio relay / ceiling
(target >= 0.6).

    .venv/bin/python -m benchmarks.throughput_rabbitmq
    .venv/bin/python -m benchmarks.throughput_rabbitmq --events 20000 --reps 1 --windows 500,2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import psycopg
import uuid_utils

from benchmarks.common import (
    Env,
    drop_schema,
    key_for,
    load1,
    migrate_outbox,
    new_tag,
    relay_run,
    report_windows,
    summarize_windows,
)
from benchmarks.throughput import _encoded, prewrite
from outboxkit.brokers.rabbitmq import RabbitMQPublisher, amqp_properties
from outboxkit.core.envelope import OutboxEvent
from outboxkit.stores.base import TableRef

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@contextlib.asynccontextmanager
async def rabbit_env(db: str, amqp: str) -> AsyncIterator[Env]:
    """A fresh schema with the outbox, and a fresh exchange + quorum queue; all removed at the end."""
    tag = new_tag()
    env = Env(tag=tag, ref=TableRef("outbox", tag), db=db, broker=f"{amqp}?exchange={tag}")
    conn = await aio_pika.connect(amqp)
    try:
        await asyncio.to_thread(migrate_outbox, env, notify=True)
        ch = await conn.channel()
        exchange = await ch.declare_exchange(tag, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await ch.declare_queue(tag, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, f"{tag}.#")
        yield env
    finally:
        with contextlib.suppress(Exception):
            ch = await conn.channel()
            await ch.queue_delete(tag)
            await ch.exchange_delete(tag)
        await conn.close()
        await asyncio.to_thread(drop_schema, db, tag)


async def queue_op(amqp: str, name: str, op: str) -> int:
    conn = await aio_pika.connect(amqp)
    async with conn:
        ch = await conn.channel()
        queue = await ch.declare_queue(name, passive=True)
        if op == "purge":
            await queue.purge()
            return 0
        return int(queue.declaration_result.message_count or 0)


async def _pending(conn: psycopg.AsyncConnection[Any], env: Env) -> int:
    cur = await conn.execute(f"SELECT count(*) FROM {env.ref.qualified} WHERE delivered_at IS NULL AND dead_at IS NULL")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def run_relay(env: Env, amqp: str, n: int, *, window: int, batch_size: int, timeout: float) -> dict[str, Any]:
    result = await relay_run(env, n, window=window, batch_size=batch_size, timeout=timeout)
    result["queue_messages"] = await queue_op(amqp, env.tag, "count")
    return result


async def run_ceiling(env: Env, amqp: str, n: int, keys: int, *, window: int) -> dict[str, Any]:
    settings = RabbitMQPublisher(env.broker).settings
    topic = env.topic()
    now = datetime.now(UTC)
    # The relay's exact properties and headers, built before the clock starts.
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
        messages.append((event.payload, amqp_properties(event, "/outboxkit", settings.prefixes)))
    conn = await aio_pika.connect_robust(amqp)
    errors = 0
    try:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        channel = await ch.get_underlay_channel()
        assert isinstance(channel, aiormq.Channel)
        slots = asyncio.Semaphore(window)
        tasks = []

        def release(fut: asyncio.Future[Any]) -> None:
            nonlocal errors
            slots.release()
            if fut.cancelled() or fut.exception() is not None:
                errors += 1

        t0 = time.perf_counter()
        for body, props in messages:
            await slots.acquire()
            task = asyncio.create_task(
                channel.basic_publish(
                    body, exchange=env.tag, routing_key=topic, properties=props, mandatory=True, wait=False
                )
            )
            task.add_done_callback(release)
            tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - t0
    finally:
        await conn.close()
    return {"seconds": elapsed, "events": n - errors, "events_per_s": (n - errors) / elapsed, "errors": errors}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    windows = [int(w) for w in args.windows.split(",")]
    runs: list[dict[str, Any]] = []
    async with rabbit_env(args.db, args.amqp) as env:
        print(
            f"schema/exchange/queue: {env.tag}; {args.events:,} events, {args.keys:,} keys, "
            f"batch_size {args.batch_size}, windows {windows}, {args.reps} reps"
        )
        for rep in range(1, args.reps + 1):
            for window in windows:
                load_before = load1()  # the rep's load, before and after: quiet or not
                await queue_op(args.amqp, env.tag, "purge")
                pw = await asyncio.to_thread(prewrite, env, args.events, args.keys, "executemany")
                relay = await run_relay(
                    env, args.amqp, args.events, window=window, batch_size=args.batch_size, timeout=args.timeout
                )
                await queue_op(args.amqp, env.tag, "purge")
                ceiling = await run_ceiling(env, args.amqp, args.events, args.keys, window=window)
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
                    f"({relay['seconds']:.2f}s, {relay['batches']} batches, queue {relay['queue_messages']:,}, "
                    f"left {relay['pending_left']})  ceiling {ceiling['events_per_s']:>8,.0f}/s "
                    f"(errors {ceiling['errors']})  ratio {run['ratio']:.2f}  [prewrite {pw:.1f}s]"
                )
        await queue_op(args.amqp, env.tag, "purge")
    summary = summarize_windows(runs, windows, args.batch_size)
    return {"params": {k: v for k, v in vars(args).items() if k != "amqp"}, "runs": runs, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=PG_URL, help="PostgreSQL URL (default %(default)s)")
    parser.add_argument("--amqp", default=AMQP_URL, help="RabbitMQ URL without ?exchange= (default: shared broker)")
    parser.add_argument("--no-json", action="store_true", help="do not write benchmarks/results/*.json")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3, help="repetitions; medians reported")
    parser.add_argument("--windows", default="1000", help="comma-separated relay windows")
    parser.add_argument("--batch-size", type=int, default=2000, help="relay rows per fetch")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one relay run after this")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    report_windows("throughput_rabbitmq", result, t0, disabled=args.no_json)


if __name__ == "__main__":
    main()
