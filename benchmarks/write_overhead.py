"""Write overhead of emit(): a 1-row business transaction with and without an outbox event.

Variants, each with 1 and N concurrent writers (separate processes, one psycopg connection each,
so the GIL cannot distort the result):

* ``baseline``      INSERT INTO <schema>.orders ...; COMMIT
* ``emit+notify``   the same plus ``emit()`` in the transaction; outbox has the NOTIFY trigger
  (default ``migrate``), so every commit takes PostgreSQL's global notify lock (hazard H2)
* ``emit``          the same, outbox migrated with ``notify=False`` (no trigger; the relay polls)

Reports transactions/s, mean and p99 latency, and overhead = 1 - tps_with / tps_without.
Target: overhead <= 15% at 8 writers.

    .venv/bin/python -m benchmarks.write_overhead
    .venv/bin/python -m benchmarks.write_overhead --writers 1,8 --duration 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psycopg

from benchmarks.common import (
    add_common_args,
    key_for,
    median,
    payload,
    percentile,
    pg_schema,
    table,
    write_results,
)
from outboxkit import Outbox, migrate
from outboxkit.stores.base import TableRef

# A "/pipeline" suffix sends each transaction in psycopg pipeline mode (BEGIN, INSERTs and COMMIT in
# one round trip); its overhead is measured against "baseline/pipeline".
# "baseline+insert" adds a plain second INSERT (a bytea row into a table with only a primary key):
# the floor for any design that writes the event as a second statement.
VARIANTS = ("baseline", "baseline+insert", "emit+notify", "emit", "baseline/pipeline", "emit+notify/pipeline")


def _writer(db: str, schema: str, variant: str, ready: Any, go: Any, duration: float, seed: int) -> dict[str, Any]:
    with_emit = not variant.startswith("baseline")
    second_insert = variant == "baseline+insert"
    audit = f'INSERT INTO "{schema}".audit (payload) VALUES (%s)'
    pipelined = variant.endswith("/pipeline")
    outbox = Outbox(schema=schema)
    topic = f"{schema}.orders.created"
    insert = f'INSERT INTO "{schema}".orders (customer, amount_cents, status) VALUES (%s, %s, %s)'
    lat: list[float] = []
    with psycopg.connect(db) as conn:
        # Warm up: connection, prepared statements, outbox SQL cache.
        for i in range(20):
            with conn.transaction():
                conn.execute(insert, [key_for(i, 1000), 1000, "created"])
                if with_emit:
                    outbox.emit(conn, topic, payload(i), key=key_for(i, 1000))
        ready.put(seed)
        go.wait()
        start = time.monotonic()
        cpu0 = time.process_time()
        end = start + duration
        i = seed * 1_000_000
        while True:
            t0 = time.perf_counter()
            if time.monotonic() >= end:
                break
            with conn.pipeline() if pipelined else contextlib.nullcontext(), conn.transaction():
                conn.execute(insert, [key_for(i, 1000), 1000 + i % 5000, "created"])
                if with_emit:
                    outbox.emit(conn, topic, payload(i), key=key_for(i, 1000))
                elif second_insert:
                    conn.execute(audit, [json.dumps(payload(i)).encode()])
            lat.append(time.perf_counter() - t0)
            i += 1
        cpu = time.process_time() - cpu0
    return {"count": len(lat), "lat": lat, "client_cpu_s": cpu}


def run_variant(
    pool: ProcessPoolExecutor, manager: Any, db: str, schema: str, variant: str, writers: int, duration: float
) -> dict[str, Any]:
    # Every writer connects and warms up, then all start together.
    ready, go = manager.Queue(), manager.Event()
    futures = [pool.submit(_writer, db, schema, variant, ready, go, duration, w) for w in range(writers)]
    for _ in range(writers):
        ready.get(timeout=120)
    load_before = os.getloadavg()[0]
    go.set()
    parts = [f.result() for f in futures]
    lat = [x for p in parts for x in p["lat"]]
    count = sum(p["count"] for p in parts)
    return {
        "variant": variant,
        "writers": writers,
        "transactions": count,
        "tps": count / duration,
        "mean_ms": 1000 * sum(lat) / len(lat),
        "p99_ms": 1000 * percentile(lat, 99),
        # Writer-process CPU per transaction: on 2 cores the clients compete with the server.
        "client_cpu_us_per_tx": 1e6 * sum(p["client_cpu_s"] for p in parts) / max(1, count),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
    }


def setup(db: str, schema: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'''CREATE TABLE "{schema}".orders (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            customer text NOT NULL,
            amount_cents integer NOT NULL,
            status text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())''')
        conn.execute(
            f'CREATE TABLE "{schema}".audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload bytea)'
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--writers", default="1,8", help="comma-separated writer counts")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions; the median tx/s is reported")
    args = parser.parse_args()
    writer_counts = [int(w) for w in args.writers.split(",")]
    variants = args.variants.split(",")
    results: list[dict[str, Any]] = []
    with pg_schema(args.db) as schema:
        setup(args.db, schema)
        ref = TableRef("outbox", schema)
        migrate(args.db, ref, notify=True)
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=max(writer_counts), mp_context=ctx) as pool:
            for rep, writers, variant in [(r, w, v) for r in range(args.reps) for w in writer_counts for v in variants]:
                # The trigger is per table: switch it on or off for this variant.
                if variant.startswith("emit+notify"):
                    migrate(args.db, ref, notify=True)
                elif variant.startswith("emit"):
                    migrate(args.db, ref, notify=False)
                with psycopg.connect(args.db, autocommit=True) as conn:
                    conn.execute("CHECKPOINT")  # start each run from a comparable WAL state
                r = run_variant(pool, manager, args.db, schema, variant, writers, args.duration)
                r["rep"] = rep + 1
                results.append(r)
                print(
                    f"  rep {rep + 1} {writers} writer(s) {variant:<12} {r['tps']:>8,.0f} tx/s"
                    f"  mean {r['mean_ms']:.2f} ms  client cpu {r['client_cpu_us_per_tx']:.0f} us/tx"
                    f"  p99 {r['p99_ms']:.2f} ms  (load {r['loadavg_1m_before']:.1f})",
                    flush=True,
                )
    summary: list[dict[str, Any]] = []
    for writers in writer_counts:
        for variant in variants:
            mine = [r for r in results if r["writers"] == writers and r["variant"] == variant]
            summary.append(
                {
                    "writers": writers,
                    "variant": variant,
                    "reps": len(mine),
                    "tps": median([r["tps"] for r in mine]),
                    "mean_ms": median([r["mean_ms"] for r in mine]),
                    "p99_ms": median([r["p99_ms"] for r in mine]),
                }
            )
    rows = []
    for s in summary:
        base_name = "baseline/pipeline" if s["variant"].endswith("/pipeline") else "baseline"
        base = next((b for b in summary if b["writers"] == s["writers"] and b["variant"] == base_name), None)
        s["overhead"] = 1 - s["tps"] / base["tps"] if base else None
        target = ""
        if not s["variant"].startswith("baseline") and s["writers"] == 8 and s["overhead"] is not None:
            target = "met" if s["overhead"] <= 0.15 else "MISSED"
        over = "" if s["variant"].startswith("baseline") or s["overhead"] is None else f"{100 * s['overhead']:.1f}%"
        rows.append([s["writers"], s["variant"], s["tps"], s["mean_ms"], s["p99_ms"], over, target])
    print()
    print(table(["writers", "variant", "tx/s", "mean ms", "p99 ms", "overhead", "<=15% @8"], rows))
    path = write_results(
        "write_overhead", {"params": vars(args), "runs": results, "summary": summary}, disabled=args.no_json
    )
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
