"""Soak: the chaos harness with many faults (1,000 by default) on three relays.

    .venv/bin/python -m benchmarks.soak                    # 1,000 faults, ~25 minutes on 2 cores
    .venv/bin/python -m benchmarks.soak --faults 200 --seed 7
    .venv/bin/python -m benchmarks.soak --capture wal --faults 100     # or --capture binlog (MariaDB)

Prints progress, then the tally (lost, phantom, duplicates, per-key order violations among first
deliveries), the longest commit-to-first-delivery stall and the faults by kind; writes JSON to
benchmarks/results/. Exits 1 if anything was lost, phantom or out of order, or a relay did not exit
cleanly.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks.common import write_results
from outboxkit.testing.chaos import ALL_KINDS, CAPTURES, KINDS, ChaosOptions, run_chaos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--relays", type=int, default=3)
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated fault kinds, or 'all' ({','.join(ALL_KINDS)}); default %(default)s",
    )
    parser.add_argument("--capture", choices=CAPTURES, default="table")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {line}", flush=True)

    result = run_chaos(
        ChaosOptions(
            faults=args.faults,
            seed=args.seed,
            relays=args.relays,
            kinds=ALL_KINDS if args.kinds == "all" else tuple(args.kinds.split(",")),
            capture=args.capture,
        ),
        progress=progress,
    )
    summary = {
        "tally": result.tally.as_dict(),
        "faults": dict(result.faults),
        "relay_exits": result.relay_exits,
        "bad_rows": result.bad_rows,
        "bad_rows_dead_with_reason": result.bad_dead,
        "longest_stall_s": round(result.longest_stall, 3),
        "capture": args.capture,
        "elapsed_s": result.elapsed,
    }
    print(summary)
    path = write_results("soak", {"params": vars(args), **summary}, disabled=args.no_json)
    if path:
        print(f"results: {path}")
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
