"""Where the relay's CPU goes per event, per bus.

For each bus, on a fresh outbox (PostgreSQL): pre-write N events and run the in-process relay
(``benchmarks.common.relay_run``) twice —

1. unprofiled: the process CPU time (``time.process_time``, every thread: librdkafka's and
   paho's threads included) per delivered event, the true cost;
2. under ``cProfile`` timed by the event-loop thread's CPU clock (``time.thread_time``, so time
   blocked waiting in epoll does not count): the share of that CPU spent in each area,
   attributed by the file of each function's own time (``tottime``; a builtin's to its callers):
   outboxkit's relay, its broker
   adapter, its store, the broker's client library, psycopg, asyncio, json, and the rest.

Each area's µs/event is its profiled share times the unprofiled CPU/event (cProfile's own overhead
inflates Python-heavy areas, so read the shares as a ranking, not to the microsecond). Also prints
the top functions by own time. The benchmark's own progress check (a count every 5 ms) is in "rest".

    .venv/bin/python -m benchmarks.cpu_profile
    .venv/bin/python -m benchmarks.cpu_profile --events 10000 --buses nats,kafka --top 15
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from typing import Any

from benchmarks.buses import add_bus_args, open_bus
from benchmarks.common import relay_run, table, write_results
from benchmarks.throughput import prewrite

# (area, substrings of a function's file or name), first match wins.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("outboxkit relay", ("outboxkit/relay/",)),
    ("outboxkit broker adapter", ("outboxkit/brokers/",)),
    ("outboxkit store", ("outboxkit/stores/",)),
    ("outboxkit core", ("outboxkit/core/", "outboxkit/")),
    ("nats-py", ("/nats/",)),
    ("confluent-kafka", ("confluent_kafka", "cimpl", "Producer")),
    ("redis-py", ("/redis/",)),
    ("aio-pika/aiormq/pamqp", ("/aio_pika/", "/aiormq/", "/pamqp/")),
    ("paho/aiomqtt", ("/paho/", "/aiomqtt/")),
    ("psycopg", ("/psycopg/", "psycopg_binary", "psycopg_c")),
    ("asyncio + selectors", ("/asyncio/", "selectors.py", "select.epoll", "socket", "_overlapped")),
    ("json", ("/json/", "json.")),
)


def area_of(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for area, needles in AREAS:
        if any(n in where for n in needles):
            return area
    return "rest (benchmark, stdlib, builtins)"


async def run_one(bus: Any, args: argparse.Namespace, *, profile: cProfile.Profile | None) -> dict[str, Any]:
    await bus.reset()
    await asyncio.to_thread(prewrite, bus.env, args.events, args.keys, "executemany")
    cpu0 = time.process_time()
    if profile is not None:
        profile.enable()
    try:
        result = await relay_run(
            bus.env, args.events, window=args.window, batch_size=args.batch_size, timeout=args.timeout
        )
    finally:
        if profile is not None:
            profile.disable()
    result["cpu_s"] = time.process_time() - cpu0
    result["cpu_us_per_event"] = 1e6 * result["cpu_s"] / max(1, result["events"])
    await bus.reset()
    return result


def summarise(profile: cProfile.Profile, top: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_area: dict[str, float] = {}
    functions = []
    for (filename, line, name), (_cc, ncalls, tottime, _cum, callers) in raw.items():
        if filename == "~" and callers:
            # A builtin (len, str.encode, dict.items, ...): its time belongs to whoever called it.
            for (c_file, _c_line, c_name), c_stats in callers.items():
                c_area = area_of(c_file, c_name)
                by_area[c_area] = by_area.get(c_area, 0.0) + c_stats[2]
        else:
            area = area_of(filename, name)
            by_area[area] = by_area.get(area, 0.0) + tottime
        functions.append({"function": f"{filename.rsplit('site-packages/', 1)[-1]}:{line}({name})", "tottime": tottime})
        functions[-1]["calls"] = ncalls
    total = sum(by_area.values()) or 1.0
    shares = {a: t / total for a, t in sorted(by_area.items(), key=lambda kv: -kv[1])}
    functions.sort(key=lambda f: -f["tottime"])
    for f in functions:
        f["share"] = f["tottime"] / total
    return shares, functions[:top]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for name in args.buses.split(","):
        async with open_bus(name, args.db, args) as bus:
            plain = await run_one(bus, args, profile=None)
            # The event-loop thread's CPU clock, not the wall clock: time blocked in epoll is not cost.
            profile = cProfile.Profile(time.thread_time)
            profiled = await run_one(bus, args, profile=profile)
        shares, top = summarise(profile, args.top)
        per_event = plain["cpu_us_per_event"]
        areas = {a: {"share": s, "us_per_event": s * per_event} for a, s in shares.items()}
        results.append({"bus": name, "plain": plain, "profiled": profiled, "areas": areas, "top": top})
        print(
            f"\n{name}: {plain['events_per_s']:,.0f} ev/s unprofiled, {per_event:.0f} µs CPU/event "
            f"(profiled run {profiled['events_per_s']:,.0f} ev/s, {profiled['failed_attempts']} failed attempts "
            f"re-sent: the profiler's slowdown can time publishes out; load {os.getloadavg()[0]:.1f})"
        )
        print(
            table(["area", "share %", "µs/event"], [[a, 100 * v["share"], v["us_per_event"]] for a, v in areas.items()])
        )
        print(
            table(
                ["top function (own time)", "calls", "share %"],
                [[f["function"][-70:], f["calls"], 100 * f["share"]] for f in top],
            )
        )
    return {"params": {k: v for k, v in vars(args).items() if k != "amqp"}, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bus_args(parser)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--top", type=int, default=12, help="top functions printed per bus")
    parser.set_defaults(events=10_000)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print()
    print(
        table(
            ["bus", "ev/s", "CPU µs/event", "top area"],
            [
                [
                    r["bus"],
                    r["plain"]["events_per_s"],
                    r["plain"]["cpu_us_per_event"],
                    next(iter(r["areas"])) if r["areas"] else "",
                ]
                for r in result["results"]
            ],
        )
    )
    path = write_results("cpu_profile", result, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
