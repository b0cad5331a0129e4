"""Relay throughput, PostgreSQL -> MQTT (Mosquitto), against the raw paho-mqtt ceiling.

Like ``benchmarks/throughput.py``: for each repetition, 50,000 events are pre-written to a fresh
outbox (own schema), the in-process relay publishes them with QoS 1 until 0 rows are pending, then
paho alone (through the same aiomqtt connection class, no relay) publishes the same messages —
same MQTT topic, payload and MQTT 5 user properties — with the same in-flight window, every PUBACK
awaited. Reports events/s for both and the ratio (target >= 0.6).

No subscriber is attached (``require_subscriber=false``): Mosquitto acknowledges and drops, so
both sides measure publish + PUBACK, not a consumer. Mosquitto's Receive Maximum (its
``max_inflight_messages``, 20 by default) caps the in-flight window on both sides alike.

    .venv/bin/python -m benchmarks.throughput_mqtt
    .venv/bin/python -m benchmarks.throughput_mqtt --events 20000 --reps 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

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
from outboxkit.brokers.mqtt import _Client, encode, mqtt_topic, parse_url
from outboxkit.core.envelope import OutboxEvent
from outboxkit.stores.base import TableRef

MQTT_URL = os.environ.get("BENCH_MQTT_URL", "mqtt://127.0.0.1:1883")


async def run_relay(env: Env, n: int, *, window: int, batch_size: int, timeout: float) -> dict[str, Any]:
    result = await relay_run(env, n, window=window, batch_size=batch_size, timeout=timeout)
    return result


async def run_ceiling(env: Env, n: int, keys: int, *, window: int) -> dict[str, Any]:
    settings = parse_url(env.broker)
    messages = []
    for i in range(n):
        ev = OutboxEvent(seq=i + 1, id=f"{i:032x}", topic=env.topic(), payload=_encoded(i), key=key_for(i, keys))
        payload, props = encode(ev, "/outboxkit", settings.version)
        messages.append((mqtt_topic(ev.topic), payload, props))
    done = asyncio.Event()
    acked = errors = 0
    sem = asyncio.Semaphore(window)

    def on_ack(mid: int, reason: Any) -> None:
        nonlocal acked, errors
        acked += 1
        errors += int(reason.value) >= 0x80
        sem.release()
        if acked == n:
            done.set()

    client = _Client(settings, identifier=None, persistent=False, on_publish=on_ack)
    await client.__aenter__()
    try:
        t0 = time.perf_counter()
        for topic, payload, props in messages:
            await sem.acquire()  # the relay's window: never more than `window` unconfirmed
            client.raw.publish(topic, payload, settings.qos, False, props)
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - t0
    finally:
        await client.__aexit__(None, None, None)
    return {"seconds": elapsed, "events": acked - errors, "events_per_s": (acked - errors) / elapsed, "errors": errors}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tag = new_tag()
    broker = f"{args.broker}{'&' if '?' in args.broker else '?'}require_subscriber=false"
    env = Env(tag=tag, ref=TableRef("outbox", tag), db=args.db, broker=broker)
    runs: list[dict[str, Any]] = []
    try:
        await asyncio.to_thread(migrate_outbox, env, notify=True)
        print(f"schema/topic: {tag} / {mqtt_topic(env.topic())}; {args.events:,} events, window {args.window}")
        for rep in range(1, args.reps + 1):
            load_before = load1()  # the rep's load, before and after: quiet or not
            pw = await asyncio.to_thread(prewrite, env, args.events, args.keys, "executemany")
            relay = await run_relay(env, args.events, window=args.window, batch_size=args.batch_size, timeout=120)
            ceiling = await run_ceiling(env, args.events, args.keys, window=args.window)
            run = {"rep": rep, "prewrite_s": pw, "relay": relay, "ceiling": ceiling}
            run.update(load_before=load_before, load_after=load1())
            run["ratio"] = relay["events_per_s"] / ceiling["events_per_s"]
            runs.append(run)
            print(
                f"  rep {rep}: relay {relay['events_per_s']:>8,.0f}/s ({relay['seconds']:.2f}s, "
                f"left {relay['pending_left']}, failed {relay['failed_attempts']})  "
                f"ceiling {ceiling['events_per_s']:>8,.0f}/s  ratio {run['ratio']:.2f}"
            )
    finally:
        await asyncio.to_thread(drop_schema, args.db, tag)
    rel = median([r["relay"]["events_per_s"] for r in runs])
    ceil = median([r["ceiling"]["events_per_s"] for r in runs])
    return {
        "params": vars(args),
        "runs": runs,
        "summary": {"window": args.window, "relay_median": rel, "ceiling_median": ceil, "ratio": rel / ceil},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=PG_URL)
    parser.add_argument("--broker", default=MQTT_URL)
    parser.add_argument("--no-json", action="store_true")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    s = result["summary"]
    print()
    print(
        table(
            ["window", "relay ev/s", "ceiling ev/s", "ratio", "target>=0.6"],
            [
                [
                    s["window"],
                    s["relay_median"],
                    s["ceiling_median"],
                    round(s["ratio"], 2),
                    "met" if s["ratio"] >= 0.6 else "MISSED",
                ]
            ],
        )
    )
    print(f"total {time.perf_counter() - t0:.0f}s")
    path = write_results("throughput_mqtt", result, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
