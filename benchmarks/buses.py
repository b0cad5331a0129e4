"""Every bus in one run: relay throughput against the bus client's own ceiling AND the database's.

For each bus (NATS JetStream, Kafka, Redis Streams, RabbitMQ, MQTT), in turn, on a fresh outbox:

1. relay: pre-write N events (transactions of 500 rows, K keys round robin, ~200-byte JSON), run the
   in-process relay until 0 rows are pending; events/s (``benchmarks.common.relay_run``).
2. database ceiling: the same N rows written again, then fetched and marked delivered with the
   store's own code (``store_for(...).fetch_pending`` / ``mark_delivered``, with leases, the next
   fetch overlapping the previous batch's mark as the relay's marker does) and nothing published;
   events/s. This is what the relay could reach with an infinitely fast bus.
3. client ceiling: the bus's own client alone publishing the same N messages (same topic, payload,
   headers, window, confirmations) — the ``run_ceiling`` of ``benchmarks.throughput_<bus>``.

With ``--reps R`` the three are repeated R times back to back per bus and the medians compared.
The ratio is relay / min(client ceiling, database ceiling): the issue 12 target is >= 0.8 on NATS
(against the client ceiling) and >= 0.6 on the other buses.

Kafka runs against a private Tansu (memory storage) unless ``--kafka`` names a broker. Every bus gets
its own schema / stream / topic / queue, removed at the end.

    .venv/bin/python -m benchmarks.buses
    .venv/bin/python -m benchmarks.buses --events 20000 --buses nats,kafka
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import (
    NATS_URL,
    PG_URL,
    Env,
    bench_env,
    drop_schema,
    load1,
    median,
    migrate_outbox,
    new_tag,
    purge_stream,
    relay_run,
    table,
    write_results,
)
from benchmarks.throughput import prewrite
from outboxkit.brokers.registry import publisher_for
from outboxkit.stores.base import Filter, TableRef
from outboxkit.stores.registry import store_for

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MQTT_URL = os.environ.get("BENCH_MQTT_URL", "mqtt://127.0.0.1:1883")
ALL_BUSES = ("nats", "kafka", "redis", "rabbitmq", "mqtt")
TARGET = {"nats": 0.8}  # every other bus: 0.6


@dataclass
class Bus:
    """One bus set up for a run: where the relay publishes, how to empty it, its client's ceiling."""

    name: str
    env: Env
    reset: Callable[[], Awaitable[None]]
    ceiling: Callable[[int, int, int], Awaitable[dict[str, Any]]]  # (events, keys, window) -> result


async def _nothing() -> None:
    return None


@contextlib.asynccontextmanager
async def _plain_env(db: str, broker: str) -> AsyncIterator[Env]:
    tag = new_tag()
    env = Env(tag=tag, ref=TableRef("outbox", tag), db=db, broker=broker)
    try:
        await asyncio.to_thread(migrate_outbox, env, notify=True)
        yield env
    finally:
        await asyncio.to_thread(drop_schema, db, tag)


@contextlib.asynccontextmanager
async def open_bus(name: str, db: str, args: argparse.Namespace) -> AsyncIterator[Bus]:
    """Set up ``name`` (nats, kafka, redis, rabbitmq, mqtt) with a fresh outbox; torn down on exit."""
    if name == "nats":
        from benchmarks import throughput as nats_bench

        async with bench_env(db, args.nats) as env:

            async def nats_reset() -> None:
                await purge_stream(env.broker, env.stream)

            async def nats_ceiling(n: int, keys: int, window: int) -> dict[str, Any]:
                await nats_reset()
                return await nats_bench.run_ceiling(env, n, keys, window=window)

            yield Bus(name, env, nats_reset, nats_ceiling)
    elif name == "kafka":
        from benchmarks import throughput_kafka as kafka_bench
        from outboxkit.brokers.kafka import KafkaPublisher, ensure_topics

        with kafka_bench.broker_url(args.kafka) as url:
            async with _plain_env(db, url) as env:
                await asyncio.to_thread(ensure_topics, KafkaPublisher(url).config, [env.topic()])

                async def kafka_ceiling(n: int, keys: int, window: int) -> dict[str, Any]:
                    return await asyncio.to_thread(kafka_bench.run_ceiling, env, n, keys, window=window)

                yield Bus(name, env, _nothing, kafka_ceiling)
    elif name == "redis":
        from benchmarks import throughput_redis as redis_bench

        async with _plain_env(db, args.redis) as env:

            async def redis_reset() -> None:
                await redis_bench.drop_stream(env)

            async def redis_ceiling(n: int, keys: int, window: int) -> dict[str, Any]:
                # The faster of redis-py's Pipeline and pre-encoded RESP (what the adapter sends).
                best: dict[str, Any] | None = None
                for raw in (False, True):
                    await redis_reset()
                    r = await redis_bench.run_ceiling(env, n, keys, window=window, raw=raw)
                    r["kind"] = "raw" if raw else "pipeline"
                    if best is None or r["events_per_s"] > best["events_per_s"]:
                        best = r
                await redis_reset()
                assert best is not None
                return best

            try:
                yield Bus(name, env, redis_reset, redis_ceiling)
            finally:
                await redis_reset()
    elif name == "rabbitmq":
        from benchmarks import throughput_rabbitmq as rabbit_bench

        async with rabbit_bench.rabbit_env(db, args.amqp) as env:

            async def rabbit_reset() -> None:
                await rabbit_bench.queue_op(args.amqp, env.tag, "purge")

            async def rabbit_ceiling(n: int, keys: int, window: int) -> dict[str, Any]:
                await rabbit_reset()
                r = await rabbit_bench.run_ceiling(env, args.amqp, n, keys, window=window)
                await rabbit_reset()
                return r

            yield Bus(name, env, rabbit_reset, rabbit_ceiling)
    elif name == "mqtt":
        from benchmarks import throughput_mqtt as mqtt_bench

        url = f"{args.mqtt}{'&' if '?' in args.mqtt else '?'}require_subscriber=false"
        async with _plain_env(db, url) as env:

            async def mqtt_ceiling(n: int, keys: int, window: int) -> dict[str, Any]:
                return await mqtt_bench.run_ceiling(env, n, keys, window=window)

            yield Bus(name, env, _nothing, mqtt_ceiling)
    else:
        raise SystemExit(f"unknown bus {name!r}; choose from {', '.join(ALL_BUSES)}")


async def db_ceiling(env: Env, n: int, *, batch_size: int, timeout: float = 120.0) -> dict[str, Any]:
    """Fetch and mark ``n`` pre-written rows with the store's own code, publishing nothing.

    Like the relay: leases held (so fetch and mark run the fenced SQL the relay runs), rows in hand
    excluded from the next fetch, and one mark UPDATE in flight while the next fetch runs (the
    store marks on a connection of its own)."""
    store = store_for(env.db, env.ref)
    await store.open()
    try:
        grant = await store.maintain_leases(f"bench-db-ceiling-{os.getpid()}", {}, 60.0, rebalance=True)
        leases = grant.held
        in_hand: set[int] = set()
        marked = 0
        mark_task: asyncio.Task[int] | None = None
        marking: list[int] = []
        pending_marks: list[int] = []
        t0 = time.perf_counter()
        deadline = t0 + timeout
        while marked < n and time.perf_counter() < deadline:
            rows = await store.fetch_pending(batch_size, Filter(), leases, exclude=list(in_hand))
            for row in rows:
                in_hand.add(row.seq)
                pending_marks.append(row.seq)
            if mark_task is not None and (mark_task.done() or not rows):
                marked += await mark_task
                in_hand.difference_update(marking)
                mark_task = None
            if mark_task is None and pending_marks:
                marking, pending_marks = pending_marks, []
                mark_task = asyncio.ensure_future(store.mark_delivered(marking, leases))
            if not rows and mark_task is None and not pending_marks:
                break
        if mark_task is not None:
            marked += await mark_task
        elapsed = time.perf_counter() - t0
        with contextlib.suppress(Exception):
            await store.release_leases(f"bench-db-ceiling-{os.getpid()}")
    finally:
        await store.close()
    return {"seconds": elapsed, "events": marked, "events_per_s": marked / elapsed}


async def measure_once(bus: Bus, args: argparse.Namespace) -> dict[str, Any]:
    """One repetition: relay, database ceiling and client ceiling, back to back on the same rows."""
    env = bus.env
    await bus.reset()
    await asyncio.to_thread(prewrite, env, args.events, args.keys, "executemany")
    relay = await relay_run(env, args.events, window=args.window, batch_size=args.batch_size, timeout=args.timeout)
    await asyncio.to_thread(prewrite, env, args.events, args.keys, "executemany")
    database = await db_ceiling(env, args.events, batch_size=args.batch_size)
    client = await bus.ceiling(args.events, args.keys, args.window)
    await bus.reset()
    return {"relay": relay, "db_ceiling": database, "client_ceiling": client, "loadavg_1m": os.getloadavg()[0]}


async def measure_bus(bus: Bus, args: argparse.Namespace) -> dict[str, Any]:
    reps = []
    for rep in range(1, args.reps + 1):
        load_before = load1()
        r = await measure_once(bus, args)
        r["load_before"], r["load_after"] = load_before, load1()
        reps.append(r)
        print(
            f"    {bus.name} rep {rep}: relay {r['relay']['events_per_s']:,.0f}/s  "
            f"client {r['client_ceiling']['events_per_s']:,.0f}/s  db {r['db_ceiling']['events_per_s']:,.0f}/s  "
            f"(load {r['loadavg_1m']:.1f})",
            flush=True,
        )
    # Medians over the repetitions (a loaded machine makes single runs noisy).
    relay = median([r["relay"]["events_per_s"] for r in reps])
    client = median([r["client_ceiling"]["events_per_s"] for r in reps])
    database = median([r["db_ceiling"]["events_per_s"] for r in reps])
    features = publisher_for(bus.env.broker).features
    return {
        "bus": bus.name,
        "reps": reps,
        "relay_median": relay,
        "client_median": client,
        "db_median": database,
        "pending_left": max(r["relay"]["pending_left"] for r in reps),
        "tighter": "database" if database < client else "client",
        "ratio": relay / min(database, client),
        "ratio_client": relay / client,
        "ratio_db": relay / database,
        "target": TARGET.get(bus.name, 0.6),
        "ordered_pipeline": features.ordered_pipeline,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for name in args.buses.split(","):
        async with open_bus(name, args.db, args) as bus:
            r = await measure_bus(bus, args)
        results.append(r)
        print(
            f"  {name:<8} relay {r['relay_median']:>8,.0f}/s (left {r['pending_left']})  "
            f"client {r['client_median']:>8,.0f}/s  db {r['db_median']:>8,.0f}/s  "
            f"ratio {r['ratio']:.2f} vs {r['tighter']}  (medians of {args.reps})",
            flush=True,
        )
    return {"params": {k: v for k, v in vars(args).items() if k not in ("amqp",)}, "results": results}


def add_bus_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=PG_URL, help="database URL (default %(default)s)")
    parser.add_argument("--buses", default=",".join(ALL_BUSES), help="comma-separated: " + ",".join(ALL_BUSES))
    parser.add_argument("--nats", default=NATS_URL)
    parser.add_argument("--kafka", default=None, help="kafka:// URL (default: a private Tansu)")
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument("--amqp", default=AMQP_URL)
    parser.add_argument("--mqtt", default=MQTT_URL)
    parser.add_argument("--no-json", action="store_true", help="do not write benchmarks/results/*.json")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=1000, help="relay in-flight window (and the ceilings')")
    parser.add_argument("--batch-size", type=int, default=2000, help="relay rows per fetch")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one relay run after this")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bus_args(parser)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3, help="repetitions per bus; medians are reported")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    print()
    rows = [
        [
            r["bus"],
            r["relay_median"],
            r["client_median"],
            r["db_median"],
            round(r["ratio_client"], 2),
            round(r["ratio_db"], 2),
            round(r["ratio"], 2),
            r["target"],
            "met" if r["ratio"] >= r["target"] else "MISSED",
        ]
        for r in result["results"]
    ]
    print(
        table(
            ["bus", "relay ev/s", "client ev/s", "db ev/s", "/client", "/db", "/min", "target", "verdict"],
            rows,
        )
    )
    print(f"\ntotal {time.perf_counter() - t0:.0f}s, load {os.getloadavg()}")
    path = write_results("buses", result, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
