"""What the FastStream inbox middleware costs per message, on PostgreSQL and NATS JetStream.

The same FastStream subscriber (durable pull consumer, one worker) runs the same handler (one
INSERT through an SQLAlchemy ``AsyncSession``) over the same messages, twice:

* raw ceiling: no middleware; the handler opens its own transaction (BEGIN; INSERT; COMMIT) and
  FastStream acks after it returns — what a FastStream user without the inbox would write;
* with ``outboxkit.contrib.faststream.Inbox``: the id recorded in the handler's transaction, ack
  after commit, and (``--emit``) one follow-up event into the outbox in the same transaction.

    .venv/bin/python -m benchmarks.faststream_inbox
    .venv/bin/python -m benchmarks.faststream_inbox --messages 3000 --emit
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import time
import uuid
from typing import Any

import psycopg
from faststream.nats import JStream, NatsBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from benchmarks.common import (
    add_common_args,
    create_stream,
    delete_stream,
    nats_connect,
    pg_schema,
    table,
    write_results,
)
from outboxkit import Outbox, migrate
from outboxkit.contrib.faststream import Inbox, InboxTx
from outboxkit.inbox import migrate_inbox
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


async def consume(args: argparse.Namespace, schema: str, stream: str, subject: str, *, inbox: bool) -> float:
    """Seconds for one subscriber to handle ``args.messages`` messages from the stream's start."""
    engine = create_async_engine(args.db.replace("postgresql://", "postgresql+psycopg://"), pool_size=2)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    insert = text(f'INSERT INTO "{schema}".effects (event_id) VALUES (:id)')
    done = 0
    if inbox:
        middleware = Inbox(sessions, name="bench", schema=schema, outbox=Outbox(schema=schema))
        broker = NatsBroker(args.broker, middlewares=[middleware], logger=None)

        async def with_inbox(body: Any, tx: InboxTx) -> None:
            nonlocal done
            await tx.session.execute(insert, {"id": tx.event.id})
            if args.emit:
                await tx.emit(f"{schema}.followups", body, key=tx.event.key)
            done += 1

        handler: Any = with_inbox
    else:
        broker = NatsBroker(args.broker, logger=None)

        async def without_inbox(body: Any) -> None:
            nonlocal done
            async with sessions() as session, session.begin():
                await session.execute(insert, {"id": str(uuid.uuid4())})
            done += 1

        handler = without_inbox
    durable = f"{'inbox' if inbox else 'raw'}_{schema}"
    broker.subscriber(subject, stream=JStream(stream, declare=False), durable=durable, pull_sub=True)(handler)
    await broker.start()
    t0 = time.perf_counter()
    try:
        while done < args.messages:
            await asyncio.sleep(0.005)
        return time.perf_counter() - t0
    finally:
        await broker.stop()
        await engine.dispose()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with pg_schema(args.db) as schema:
        migrate(args.db, TableRef("outbox", schema))
        migrate_inbox(args.db, TableRef("inbox", schema))
        with psycopg.connect(args.db, autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{schema}".effects (event_id text NOT NULL)'.encode())
        stream, subject = schema.upper(), f"{schema}.events"
        await create_stream(args.broker, stream, [f"{schema}.>"])
        try:
            await publish(args.broker, subject, args.messages)
            raw = await consume(args, schema, stream, subject, inbox=False)
            inboxed = await consume(args, schema, stream, subject, inbox=True)
        finally:
            await delete_stream(args.broker, stream)
    n = args.messages
    return {
        "messages": n,
        "emit_follow_up": args.emit,
        "raw_msgs_per_s": n / raw,
        "inbox_msgs_per_s": n / inboxed,
        "raw_ms_per_msg": 1000 * raw / n,
        "inbox_ms_per_msg": 1000 * inboxed / n,
        "ratio_inbox_to_raw": raw / inboxed,
        "faststream": importlib.metadata.version("faststream"),
        "sqlalchemy": importlib.metadata.version("sqlalchemy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--emit", action="store_true", help="the inboxed handler also emits one follow-up event")
    args = parser.parse_args()
    r = asyncio.run(main_async(args))
    rows = [
        ["FastStream, own transaction (raw ceiling)", r["raw_msgs_per_s"], r["raw_ms_per_msg"], 1.0],
        [
            "FastStream + outboxkit inbox" + (" + emit" if args.emit else ""),
            r["inbox_msgs_per_s"],
            r["inbox_ms_per_msg"],
            r["ratio_inbox_to_raw"],
        ],
    ]
    print(table(["subscriber", "msgs/s", "ms/msg", "x raw"], rows))
    path = write_results("faststream_inbox", {"params": vars(args), **r}, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
