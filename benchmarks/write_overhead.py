"""Write overhead of emit(): a 1-row business transaction with and without an outbox event.

Variants, each with 1 and N concurrent writers (separate processes, one psycopg connection each,
so the GIL cannot distort the result):

* ``baseline``      INSERT INTO <schema>.orders ...; COMMIT
* ``emit+wake``     the same plus ``emit()`` in the transaction, outbox with the default wake-up
  trigger (issue 19: it notifies only while a relay sleeps; nobody sleeps here, so no commit
  takes PostgreSQL's notify lock)
* ``emit+wake-asleep``  the same while a stand-in relay sleeps the whole run (holds a wake-up slot):
  every commit notifies, the default's worst case
* ``emit+notify-every`` the same with the trigger before issue 19 (NOTIFY at every inserting
  statement, so every commit takes the global notify lock, hazard H2)
* ``emit``          the same, outbox migrated with ``notify=False`` (no trigger; the relay polls)
* a ``+drain`` suffix (``emit+wake+drain``, ``emit+notify-every+drain``) runs a stand-in relay beside
  the writers: the relay store's own fetch -> mark -> ``wait_for_new`` loop (no broker), so the
  wake-up's sleeping and waking happen as in production; it also takes CPU from the writers

* ``baseline+row``  the physical floor of issue 12: the business INSERT plus a plain second INSERT
  of the same width as the outbox row (a copy of the outbox table's own CREATE TABLE, so the same
  columns and primary key, but no other index and no trigger), with the values emit() writes (a
  UUIDv7, the JSON-encoded payload, the key, empty headers) built in Python each time

Reports transactions/s, mean and p99 latency, and overhead = 1 - tps_with / tps_without. Issue 12's
target: emit's overhead at 8 writers within 5 points of ``baseline+row``'s (printed as "vs floor").

``--db sqlite:///...`` runs the same on a SQLite file in a temporary directory (the URL's path is
ignored), each writer a process with its own ``sqlite3`` connection (WAL, synchronous=NORMAL, as
outboxkit opens it), ``BEGIN IMMEDIATE`` transactions; variants ``baseline``, ``baseline+row``, ``emit``.

    .venv/bin/python -m benchmarks.write_overhead
    .venv/bin/python -m benchmarks.write_overhead --writers 1,8 --duration 10
    .venv/bin/python -m benchmarks.write_overhead --writers 1,8 \
        --variants baseline,baseline+row,emit,emit+notify-every,emit+wake,emit+wake-asleep
    .venv/bin/python -m benchmarks.write_overhead --db sqlite:///x --writers 8 --variants baseline,baseline+row,emit
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Iterator
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
from benchmarks.floors import floor_ddl, floor_row, install_wakeup
from outboxkit import Outbox, migrate
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres import PostgresSchema

# A "/pipeline" suffix sends each transaction in psycopg pipeline mode (BEGIN, INSERTs and COMMIT in
# one round trip); its overhead is measured against "baseline/pipeline".
# "baseline+insert" adds a plain second INSERT (a bytea row into a table with only a primary key):
# the floor for any design that writes the event as a second statement.
VARIANTS = (
    "baseline",
    "baseline+insert",
    "baseline+row",
    "emit+notify-every",
    "emit+wake",
    "emit+wake-asleep",
    "emit",
    "baseline/pipeline",
    "emit+wake/pipeline",
)
SQLITE_VARIANTS = ("baseline", "baseline+row", "emit")
FLOOR = "baseline+row"


def _writer(db: str, schema: str, variant: str, ready: Any, go: Any, duration: float, seed: int) -> dict[str, Any]:
    with_emit = not variant.startswith("baseline")
    second_insert = variant == "baseline+insert"
    audit = f'INSERT INTO "{schema}".audit (payload) VALUES (%s)'
    wide_row = variant == FLOOR
    floor_insert = PostgresSchema().insert_sql(TableRef("floor_row", schema), "format")
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
                elif wide_row:
                    conn.execute(floor_insert, floor_row(schema, topic, i))
            lat.append(time.perf_counter() - t0)
            i += 1
        cpu = time.process_time() - cpu0
    return {"count": len(lat), "lat": lat, "client_cpu_s": cpu}


def _sqlite_writer(
    db: str, schema: str, variant: str, ready: Any, go: Any, duration: float, seed: int
) -> dict[str, Any]:
    """One SQLite writer process: BEGIN IMMEDIATE, the business INSERT, then emit() or the floor row."""
    from outboxkit.stores.registry import database_for
    from outboxkit.stores.sqlite.database import SqliteSchema

    outbox = Outbox()
    topic = "bench.orders.created"
    insert = "INSERT INTO orders (customer, amount_cents, status) VALUES (?, ?, ?)"
    floor_insert = SqliteSchema().insert_sql(TableRef("floor_row"), "qmark")
    conn: Any = database_for(db).connect(db)
    lat: list[float] = []

    def one(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")  # take the write lock at once: no deadlock on upgrade
        conn.execute(insert, [key_for(i, 1000), 1000 + i % 5000, "created"])
        if variant == "emit":
            outbox.emit(conn, topic, payload(i), key=key_for(i, 1000))
        elif variant == FLOOR:
            conn.execute(floor_insert, floor_row(None, topic, i))
        conn.execute("COMMIT")

    try:
        for i in range(20):
            one(i)
        ready.put(seed)
        go.wait()
        start = time.monotonic()
        cpu0 = time.process_time()
        end = start + duration
        i = seed * 1_000_000
        while time.monotonic() < end:
            t0 = time.perf_counter()
            one(i)
            lat.append(time.perf_counter() - t0)
            i += 1
        cpu = time.process_time() - cpu0
    finally:
        conn.close()
    return {"count": len(lat), "lat": lat, "client_cpu_s": cpu}


def run_variant(
    pool: ProcessPoolExecutor, manager: Any, db: str, schema: str, variant: str, writers: int, duration: float
) -> dict[str, Any]:
    # Every writer connects and warms up, then all start together.
    ready, go = manager.Queue(), manager.Event()
    writer = _sqlite_writer if db.startswith("sqlite:") else _writer
    futures = [pool.submit(writer, db, schema, variant, ready, go, duration, w) for w in range(writers)]
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


def wakeup_of(variant: str) -> str:
    """The outbox trigger a variant runs with (see floors.install_wakeup)."""
    if "notify-every" in variant:
        return "notify-every"
    return "wake" if "+wake" in variant else "none"


def _drain(db: str, schema: str, stop: Any, ready: Any) -> None:
    """A stand-in relay: the relay store's fetch -> mark -> wait_for_new loop, without a broker."""
    import asyncio

    from outboxkit.stores.base import Filter
    from outboxkit.stores.postgres.store import PostgresOutboxStore

    async def main() -> None:
        store = PostgresOutboxStore(db, TableRef("outbox", schema))
        await store.open()
        ready.set()
        try:
            while not stop.is_set():
                rows = await store.fetch_pending(2000, Filter())
                if rows:
                    await store.mark_delivered([e.seq for e in rows])
                if len(rows) < 2000:
                    await store.wait_for_new(1.0)
        finally:
            await store.close()

    asyncio.run(main())


@contextlib.contextmanager
def beside(db: str, ref: TableRef, variant: str, ctx: Any, manager: Any) -> Iterator[None]:
    """What runs beside the writers: a relay asleep the whole run (``-asleep``: it holds a wake-up
    slot, so every writer notifies), or a stand-in relay draining the outbox (``+drain``)."""
    if variant.endswith("-asleep"):
        from outboxkit.stores.postgres.wake import sleep_sql

        with psycopg.connect(db, autocommit=True) as sleeper:
            row = sleeper.execute(sleep_sql(ref).encode()).fetchone()
            if row is None or row[0] < 0:
                raise RuntimeError("could not take a wake-up slot")
            yield  # the session lock goes with the connection
        return
    if variant.endswith("+drain"):
        stop, ready = manager.Event(), manager.Event()
        proc = ctx.Process(target=_drain, args=(db, ref.schema, stop, ready))
        proc.start()
        ready.wait(60)
        try:
            yield
        finally:
            stop.set()
            proc.join(30)
        return
    yield


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
        conn.execute(floor_ddl(db, schema))


def setup_sqlite(db: str) -> None:
    from outboxkit.stores.registry import database_for

    conn: Any = database_for(db).connect(db)
    try:
        conn.execute("""CREATE TABLE orders (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            customer TEXT NOT NULL,
            amount_cents INTEGER NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))""")
        conn.execute(floor_ddl(db, None))
    finally:
        conn.close()


@contextlib.contextmanager
def database(db: str) -> Iterator[tuple[str, str]]:
    """(URL, schema) for the run: a fresh PostgreSQL schema, or a fresh SQLite file (schema "")."""
    if not db.startswith("sqlite:"):
        with pg_schema(db) as schema:
            setup(db, schema)
            yield db, schema
        return
    with tempfile.TemporaryDirectory(prefix="outboxkit-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        migrate(url, TableRef("outbox"))
        setup_sqlite(url)
        yield url, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--writers", default="1,8", help="comma-separated writer counts")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument(
        "--variants", default=None, help=f"default: {','.join(VARIANTS)} (SQLite: {','.join(SQLITE_VARIANTS)})"
    )
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions; the median tx/s is reported")
    args = parser.parse_args()
    writer_counts = [int(w) for w in args.writers.split(",")]
    sqlite = args.db.startswith("sqlite:")
    variants = (args.variants or ",".join(SQLITE_VARIANTS if sqlite else VARIANTS)).split(",")
    results: list[dict[str, Any]] = []
    with database(args.db) as (db, schema):
        ref = TableRef("outbox", schema or None)
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=max(writer_counts), mp_context=ctx) as pool:
            for rep, writers, variant in [(r, w, v) for r in range(args.reps) for w in writer_counts for v in variants]:
                # The trigger is per table: give the outbox this variant's wake-up.
                if not sqlite and variant.startswith("emit"):
                    install_wakeup(db, ref, wakeup_of(variant))
                if not sqlite:
                    with psycopg.connect(db, autocommit=True) as conn:
                        conn.execute("CHECKPOINT")  # start each run from a comparable WAL state
                with beside(db, ref, variant, ctx, manager):
                    r = run_variant(pool, manager, db, schema, variant, writers, args.duration)
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
    for s in summary:
        # Issue 12: emit's overhead within 5 points of the floor's (a plain second row, same width).
        floor = next((f for f in summary if f["writers"] == s["writers"] and f["variant"] == FLOOR), None)
        s["points_over_floor"] = None
        target = ""
        compared = not s["variant"].startswith("baseline") and not s["variant"].endswith("/pipeline")
        if compared and floor is not None and s["overhead"] is not None and floor["overhead"] is not None:
            s["points_over_floor"] = 100 * (s["overhead"] - floor["overhead"])
            target = f"{s['points_over_floor']:+.1f} " + ("met" if s["points_over_floor"] <= 5 else "MISSED")
        over = "" if s["variant"] == "baseline" or s["overhead"] is None else f"{100 * s['overhead']:.1f}%"
        rows.append([s["writers"], s["variant"], s["tps"], s["mean_ms"], s["p99_ms"], over, target])
    print()
    print(table(["writers", "variant", "tx/s", "mean ms", "p99 ms", "overhead", "vs floor (<=5 pts)"], rows))
    params = {**vars(args), "database": "sqlite" if sqlite else "postgresql"}
    path = write_results(
        "write_overhead", {"params": params, "runs": results, "summary": summary}, disabled=args.no_json
    )
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
