"""Retention (hazard H3): the relay's claim query does not slow down as delivered rows pile up,
and the batched cleanup removes them at a measured rate. PostgreSQL.

In a schema of its own (dropped at the end):

1. before: 10,000 pending rows; time ``PostgresOutboxStore.fetch_pending(2000, Filter())``,
   the relay's fetch, ``--reps`` times after a warm-up.
2. after: 1,000,000 rows already delivered (INSERT ... SELECT generate_series), then the pending
   rows written again above them (the real layout: history below the pending frontier); same timing.
3. cleanup: ``outboxkit.ops.queries.cleanup`` deletes the million in batches of ``--batch``
   (rows/s); then the fetch is timed once more, before any VACUUM (dead tuples still there).

``ANALYZE`` runs after each load, as autovacuum would. Also times ``outboxkit status`` (one pass
over the table) with the million retained.

    .venv/bin/python -m benchmarks.retention
    .venv/bin/python -m benchmarks.retention --delivered 200000 --reps 20
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta
from typing import Any

import psycopg

import outboxkit
from benchmarks.common import PG_URL, drop_schema, median, new_tag, percentile, table, write_results
from outboxkit.ops import queries as ops
from outboxkit.stores.base import Filter, TableRef
from outboxkit.stores.postgres import PostgresOutboxStore

FETCH = 2000


def load(db: str, ref: TableRef, rows: int, *, delivered: bool) -> float:
    """Insert ``rows`` rows (~200-byte payloads, 1,000 keys) in one statement; seconds taken."""
    delivered_at = "now()" if delivered else "NULL"
    sql = (
        f"INSERT INTO {ref.qualified} (topic, key, payload, delivered_at)"
        f" SELECT 'bench.orders', 'customer-' || (g %% 1000), convert_to(repeat('x', 200), 'UTF8'), {delivered_at}"
        " FROM generate_series(1, %s) g"
    )
    t0 = time.perf_counter()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.encode(), [rows])
        conn.execute(f"ANALYZE {ref.qualified}".encode())
    return time.perf_counter() - t0


def execute(db: str, sql: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.encode())


def size_mb(db: str, ref: TableRef) -> float:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", [ref.qualified]).fetchone()
    return float(row[0]) / 1e6 if row else float("nan")


async def time_fetch(db: str, ref: TableRef, reps: int) -> dict[str, Any]:
    store = PostgresOutboxStore(db, ref)
    await store.open()
    try:
        for _ in range(5):  # warm-up: plan cache, buffers
            await store.fetch_pending(FETCH, Filter())
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            got = await store.fetch_pending(FETCH, Filter())
            samples.append((time.perf_counter() - t0) * 1000)
        assert len(got) == FETCH, f"expected {FETCH} rows, got {len(got)}"
    finally:
        await store.close()
    med = median(samples)
    return {
        "median_ms": med,
        "p95_ms": percentile(samples, 95),
        "rows_per_s": FETCH / (med / 1000),
        **fetch_plan(db, store),
    }


def fetch_plan(db: str, store: PostgresOutboxStore) -> dict[str, Any]:
    """Pages the fetch touches and the index it scans: unlike timings, not disturbed by a busy
    machine. The store's own SQL text (a private attribute: this is a benchmark, not an API)."""
    sql = store._fetch_sql
    with psycopg.connect(db) as conn:
        row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}".encode(), [FETCH]).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            scans.append(f"{node['Node Type']} {node['Index Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return {"pages": plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0), "scans": scans}


def run(args: argparse.Namespace) -> dict[str, Any]:
    tag = new_tag()
    ref = TableRef("outbox", tag)
    results: dict[str, Any] = {
        "params": {"delivered": args.delivered, "pending": args.pending, "fetch": FETCH, "reps": args.reps}
    }
    try:
        outboxkit.migrate(args.db, ref)
        load(args.db, ref, args.pending, delivered=False)
        results["before"] = {**asyncio.run(time_fetch(args.db, ref, args.reps)), "table_mb": size_mb(args.db, ref)}

        # History below the pending frontier: delivered rows first, pending rows written after them.
        execute(args.db, f"TRUNCATE {ref.qualified}")  # no dead index entries left behind
        results["load_s"] = load(args.db, ref, args.delivered, delivered=True)
        load(args.db, ref, args.pending, delivered=False)
        results["after"] = {**asyncio.run(time_fetch(args.db, ref, args.reps)), "table_mb": size_mb(args.db, ref)}

        with ops.open_db(args.db, ref) as db:
            t0 = time.perf_counter()
            ops.status(db)
            results["status_ms"] = (time.perf_counter() - t0) * 1000
            *_, last = ops.cleanup(db, timedelta(0), args.batch)  # run to the end, keep the final tally
            pending = ops.status(db).to_json()["pending"]
        assert last.deleted == args.delivered, f"cleanup deleted {last.deleted}, expected {args.delivered}"
        assert pending == args.pending, "cleanup touched pending rows"
        results["cleanup"] = {
            "deleted": last.deleted,
            "batch": args.batch,
            "batches": last.batches,
            "seconds": last.seconds,
            "rows_per_s": last.rows_per_s,
        }
        results["after_cleanup"] = asyncio.run(time_fetch(args.db, ref, args.reps))
    finally:
        drop_schema(args.db, tag)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=PG_URL, help="PostgreSQL URL (default %(default)s)")
    parser.add_argument("--delivered", type=int, default=1_000_000, help="delivered rows (default %(default)s)")
    parser.add_argument("--pending", type=int, default=10_000, help="pending rows (default %(default)s)")
    parser.add_argument("--reps", type=int, default=50, help="timed fetches per phase (default %(default)s)")
    parser.add_argument("--batch", type=int, default=10_000, help="cleanup batch size (default %(default)s)")
    parser.add_argument("--no-json", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args()
    if args.pending < FETCH:
        parser.error(f"--pending must be at least {FETCH}")

    results = run(args)
    rows = [
        (phase, r["median_ms"], r["p95_ms"], r["rows_per_s"], r["pages"])
        for phase, r in ((p, results[p]) for p in ("before", "after", "after_cleanup"))
    ]
    print(f"relay fetch of {FETCH} rows, {args.pending:,} pending, {args.delivered:,} delivered in 'after':")
    print(table(["phase", "median ms", "p95 ms", "rows/s", "pages read"], rows))
    print(f"plan: {', '.join(results['after']['scans'])}")
    c = results["cleanup"]
    print(
        f"\ncleanup: {c['deleted']:,} rows in {c['batches']} batches of {c['batch']:,}: "
        f"{c['seconds']:.1f} s, {c['rows_per_s']:,.0f} rows/s"
    )
    print(
        f"load of {args.delivered:,} delivered rows: {results['load_s']:.1f} s; status with them: "
        f"{results['status_ms']:.0f} ms; table {results['after']['table_mb']:.0f} MB"
    )
    path = write_results("retention", results, disabled=args.no_json)
    if path:
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
