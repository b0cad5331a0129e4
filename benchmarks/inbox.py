"""The inbox's cost per message on PostgreSQL: the same handler (one INSERT) consumed from NATS
JetStream with the inbox (id recorded in the handler's transaction, ack after commit) and without
it (BEGIN; handler; COMMIT; ack). Target: <= 1 ms per message.

    .venv/bin/python -m benchmarks.inbox
    .venv/bin/python -m benchmarks.inbox --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import psycopg

from benchmarks.common import (
    add_common_args,
    create_stream,
    delete_stream,
    nats_connect,
    pg_schema,
    table,
    write_results,
)
from outboxkit.brokers.nats import NatsConsumer
from outboxkit.inbox import Event, InboxRunner, migrate_inbox
from outboxkit.stores.base import TableRef


async def publish(url: str, subject: str, n: int) -> None:
    nc = await nats_connect(url)
    js = nc.jetstream()
    futures = []
    for i in range(n):
        headers = {"ce-id": str(uuid.uuid4()), "ce-subject": f"k{i % 100}", "ce-specversion": "1.0"}
        futures.append(await js.publish_async(subject, json.dumps({"i": i}).encode(), headers=headers))
    await asyncio.gather(*futures)
    await nc.close()


def handler_for(schema: str) -> Any:
    sql = f'INSERT INTO "{schema}".effects (event_id) VALUES (%s)'

    def handler(conn: Any, event: Event) -> None:
        conn.execute(sql, (event.id,))

    return handler


async def with_inbox(db: str, url: str, subject: str, schema: str, n: int) -> float:
    runner = InboxRunner(
        lambda: NatsConsumer(url, group=f"inbox_{schema}", topics=[subject]),
        db,
        "bench",
        handler_for(schema),
        ref=TableRef("inbox", schema),
    )
    stop = asyncio.Event()
    t0 = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))
    while runner.stats.processed < n:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stop.set()
    await task
    return elapsed


async def without_inbox(db: str, url: str, subject: str, schema: str, n: int) -> float:
    consumer = NatsConsumer(url, group=f"bare_{schema}", topics=[subject])
    await consumer.connect()
    handler = handler_for(schema)
    done = 0
    with psycopg.connect(db, autocommit=True) as conn:
        t0 = time.perf_counter()
        while done < n:
            for incoming in await consumer.receive(100, 1.0):
                msg = incoming.message
                event = Event(msg.event_id, msg.topic, msg.key, msg.payload, dict(msg.headers), incoming.attempt)
                conn.execute("BEGIN")
                handler(conn, event)
                conn.execute("COMMIT")
                await consumer.ack(incoming)
                done += 1
        elapsed = time.perf_counter() - t0
    await consumer.close()
    return elapsed


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with pg_schema(args.db) as schema:
        migrate_inbox(args.db, TableRef("inbox", schema))
        with psycopg.connect(args.db, autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{schema}".effects (event_id text NOT NULL)')
        stream, subject = schema.upper(), f"{schema}.events"
        await create_stream(args.broker, stream, [f"{schema}.>"])
        try:
            await publish(args.broker, subject, args.messages)
            bare = await without_inbox(args.db, args.broker, subject, schema, args.messages)
            inbox = await with_inbox(args.db, args.broker, subject, schema, args.messages)
        finally:
            await delete_stream(args.broker, stream)
    n = args.messages
    return {
        "messages": n,
        "without_ms_per_msg": 1000 * bare / n,
        "with_ms_per_msg": 1000 * inbox / n,
        "overhead_ms_per_msg": 1000 * (inbox - bare) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    r = asyncio.run(main_async(args))
    target = "met" if r["overhead_ms_per_msg"] <= 1.0 else "MISSED"
    rows = [[r["messages"], r["without_ms_per_msg"], r["with_ms_per_msg"], r["overhead_ms_per_msg"], target]]
    print(table(["messages", "without inbox ms/msg", "with inbox ms/msg", "overhead ms/msg", "<= 1 ms"], rows))
    path = write_results("inbox", {"params": vars(args), **r}, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
