"""One hot key: relay throughput with every event on one key, against the same events on many keys.

For each bus, on one fresh outbox: pre-write N events on ``--keys`` keys (round robin) and run the
in-process relay until 0 rows are pending; then the same N events all on ONE key (order required,
G5) and run it again. The ratio hot / all-keys is the issue 12 figure (target >= 0.5 on buses that
keep order on one connection and let the relay keep several events of a key in flight: those whose
publisher declares ``Features.ordered_pipeline``, printed as ``pipelined``; on the others a key
has one event per broker round trip by design).

    .venv/bin/python -m benchmarks.hotkey
    .venv/bin/python -m benchmarks.hotkey --events 10000 --buses kafka,nats
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from benchmarks.buses import add_bus_args, open_bus
from benchmarks.common import relay_run, table, write_results
from benchmarks.throughput import prewrite
from outboxkit.brokers.registry import publisher_for


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for name in args.buses.split(","):
        async with open_bus(name, args.db, args) as bus:
            env = bus.env
            runs: dict[str, Any] = {}
            for label, keys in (("all_keys", args.keys), ("hot_key", 1)):
                await bus.reset()
                await asyncio.to_thread(prewrite, env, args.events, keys, "executemany")
                runs[label] = await relay_run(
                    env, args.events, window=args.window, batch_size=args.batch_size, timeout=args.timeout
                )
            await bus.reset()
            pipelined = publisher_for(env.broker).features.ordered_pipeline
        r = {
            "bus": name,
            "keys": args.keys,
            "pipelined": pipelined,
            **runs,
            "ratio": runs["hot_key"]["events_per_s"] / runs["all_keys"]["events_per_s"],
        }
        results.append(r)
        print(
            f"  {name:<8} {args.keys} keys {runs['all_keys']['events_per_s']:>8,.0f}/s  "
            f"1 key {runs['hot_key']['events_per_s']:>8,.0f}/s (left {runs['hot_key']['pending_left']})  "
            f"ratio {r['ratio']:.2f}  (load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    return {"params": {k: v for k, v in vars(args).items() if k != "amqp"}, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bus_args(parser)
    parser.add_argument("--keys", type=int, default=1_000, help="keys of the all-keys run")
    parser.set_defaults(events=10_000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    print()
    rows = [
        [
            r["bus"],
            "yes" if r["pipelined"] else "no",
            r["all_keys"]["events_per_s"],
            r["hot_key"]["events_per_s"],
            round(r["ratio"], 2),
            ("met" if r["ratio"] >= 0.5 else "MISSED") if r["pipelined"] else ("(met)" if r["ratio"] >= 0.5 else "-"),
        ]
        for r in result["results"]
    ]
    print(table(["bus", "pipelined", "all keys ev/s", "1 key ev/s", "ratio", "target>=0.5"], rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f}s, load {os.getloadavg()}")
    path = write_results("hotkey", result, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
