"""The long profile of the generated hostile-row test (H13): many examples per database, random
seeds, and what they tried.

Runs ``tests/integration/test_fuzz_table.py`` with ``OUTBOXKIT_FUZZ_EXAMPLES`` examples per
database (each a batch of 5-40 rows written by plain SQL) and prints inputs tried, hostile ones,
published, dead-lettered, set aside, held behind a dead letter, and the time taken. Needs the
services of the test suite (PostgreSQL, MariaDB, NATS on loopback).

    testslot .venv/bin/python -m benchmarks.fuzz --examples 200
    testslot .venv/bin/python -m benchmarks.fuzz --examples 50 --db sqlite
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pytest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="examples per database (default 200)")
    parser.add_argument("--db", choices=["postgres", "mariadb", "sqlite"], action="append", help="default: all three")
    args = parser.parse_args(argv)
    os.environ["OUTBOXKIT_FUZZ_EXAMPLES"] = str(args.examples)
    os.environ["OUTBOXKIT_FUZZ_RANDOM"] = "1"  # new inputs each run, not the derandomized short profile
    selected = " or ".join(f"[{db}]" for db in args.db or []) or None
    started = time.monotonic()
    code = pytest.main(
        [
            "-q",
            "-n",
            "0",
            "-p",
            "no:randomly",
            "--timeout",
            "0",
            "tests/integration/test_fuzz_table.py",
            *(["-k", selected.replace("[", "").replace("]", "")] if selected else []),
        ]
    )
    from tests.integration.test_fuzz_table import TALLY

    elapsed = time.monotonic() - started
    print(
        f"\nfuzz: {TALLY.examples} examples, {TALLY.inputs} inputs tried ({TALLY.hostile} hostile),"
        f" {TALLY.published} published, {TALLY.dead} dead-lettered, {TALLY.set_aside} set aside,"
        f" {TALLY.held} held behind a dead letter; {elapsed:.1f}s"
    )
    for kind, count in sorted(TALLY.kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:>20}: {count}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
