"""Write cost of capturing changes: no capture vs ``emit()`` vs a capture trigger, 1 and 8 writers.

Each writer is a process of its own (no GIL between them) running, for ``--duration`` seconds, one
business transaction after another on its own connection:

* ``none``: ``BEGIN; INSERT INTO orders ...; COMMIT`` (the ceiling: no event at all);
* ``floor``: the same plus a plain INSERT of the outbox row's width into a table with no trigger and
  no index but its primary key (``benchmarks.floors``): the physical floor of writing an event in the
  transaction, measured in the same run; ``emit`` and ``trigger`` are also reported against it;
* ``emit``: the same plus ``emit()`` of a ~200-byte JSON event in the transaction;
* ``trigger``: the same INSERT on a table captured by ``outboxkit capture add`` (the database builds
  the event: the row as JSON, a UUIDv7, the key) and no application change.

Reports transactions/s per mode and writer count (medians of ``--reps``, default 3, each rep listed
with its load before and after), each mode's cost against ``none`` and its ratio to ``floor``. The relay
does not run (this measures the write side only). Every mode gets a fresh schema (PostgreSQL) or
database (MariaDB) with the outbox and the orders table.

    .venv/bin/python -m benchmarks.capture_overhead
    .venv/bin/python -m benchmarks.capture_overhead --db mysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

from benchmarks.common import (
    add_common_args,
    drop_schema,
    load1,
    load_note,
    new_tag,
    payload,
    reps_summary,
    table,
    write_results,
)
from benchmarks.floors import FLOOR_TABLE, create_floor_table, floor_insert_sql, floor_row, triggers_on
from outboxkit import Outbox, migrate
from outboxkit.capture import CaptureSpec, add_capture
from outboxkit.stores.base import TableRef
from outboxkit.stores.database import placeholders
from outboxkit.stores.registry import database_for

MODES = ("none", "floor", "emit", "trigger")


def _writer(db: str, schema: str, mode: str, start_at: float, duration: float, seed: int, out: Any) -> None:
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    orders = TableRef("orders", schema).quoted(database.quote)
    insert = placeholders(database, f"INSERT INTO {orders} (id, customer, status, amount) VALUES (?, ?, ?, ?)")
    outbox = Outbox(schema=schema)
    floor_insert = floor_insert_sql(db, schema)
    done, i = 0, 0
    while time.time() < start_at:
        time.sleep(0.001)
    stop_at = start_at + duration
    while time.time() < stop_at:
        i += 1
        order_id = seed * 100_000_000 + i
        conn.execute(database.begin_sql)
        conn.execute(insert, (order_id, f"customer-{order_id % 1000}", "created", 1000 + order_id % 9000))
        if mode == "floor":
            conn.execute(floor_insert, floor_row(schema, f"{schema}.orders.created", order_id))
        elif mode == "emit":
            outbox.emit(conn, f"{schema}.orders.created", payload(order_id), key=f"customer-{order_id % 1000}")
        conn.execute("COMMIT")
        done += 1
    conn.close()
    out.put(done)


def run(db: str, mode: str, writers: int, duration: float) -> dict[str, Any]:
    schema = new_tag()
    database = database_for(db)
    ref = TableRef("outbox", schema)
    try:
        migrate(db, ref)
        conn = database.connect(db, label="outboxkit-bench")
        try:
            conn.execute(
                f"CREATE TABLE {TableRef('orders', schema).quoted(database.quote)} (id bigint PRIMARY KEY,"
                " customer varchar(64) NOT NULL, status varchar(32) NOT NULL, amount integer NOT NULL)"
            )
        finally:
            conn.close()
        if mode == "floor":
            create_floor_table(db, schema)
            conn = database.connect(db, label="outboxkit-bench")
            try:
                if triggers_on(conn, schema, FLOOR_TABLE):  # a floor with a trigger is not the floor
                    raise RuntimeError(f"{schema}.{FLOOR_TABLE} has a trigger")
            finally:
                conn.close()
        if mode == "trigger":
            add_capture(db, CaptureSpec(TableRef("orders", schema), f"{schema}.orders.changed", key="customer"), ref)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        start_at = time.time() + 2.0  # every process connected and waiting
        procs = [
            ctx.Process(target=_writer, args=(db, schema, mode, start_at, duration, w + 1, out)) for w in range(writers)
        ]
        for p in procs:
            p.start()
        counts = [out.get(timeout=duration + 60) for _ in procs]
        for p in procs:
            p.join()
        return {"mode": mode, "writers": writers, "transactions": sum(counts), "tx_per_s": sum(counts) / duration}
    finally:
        drop_schema(db, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of writing per run")
    parser.add_argument("--writers", default="1,8", help="comma-separated writer counts")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: none, floor, emit, trigger")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    results = []
    for writers in [int(w) for w in args.writers.split(",")]:
        for rep in range(args.reps):
            for mode in args.modes.split(","):
                load_before = load1()
                r = run(args.db, mode, writers, args.duration)
                r.update(rep=rep + 1, load_before=load_before, load_after=load1())
                results.append(r)
                print(
                    f"  rep {rep + 1}: {writers} writer(s), {mode:>7}: {r['tx_per_s']:>8,.0f} tx/s ({load_note(r)})",
                    flush=True,
                )
    rows = []
    summary = []
    for writers in sorted({r["writers"] for r in results}):

        def rate_of(mode: str, writers: int = writers) -> dict[str, Any]:
            mine = [r for r in results if r["writers"] == writers and r["mode"] == mode]
            return reps_summary([r["tx_per_s"] for r in mine], mine)

        base, floor = rate_of("none"), rate_of("floor")
        for mode in args.modes.split(","):
            mine = rate_of(mode)
            rate = mine["median"]
            cost = f"{(1 - rate / base['median']) * 100:+.0f}%" if base["reps"] else "-"
            to_floor = f"{rate / floor['median']:.2f}" if floor["reps"] else "-"
            each = " / ".join(f"{v:,.0f}" for v in mine["each"])
            rows.append([writers, mode, rate, cost, to_floor, each])
            summary.append({"writers": writers, "mode": mode, **mine})
    print()
    print(table(["writers", "mode", "tx/s (median)", "cost vs none", "x floor", "each rep"], rows))
    data = {"params": vars(args), "results": results, "summary": summary}
    path = write_results("capture_overhead", data, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
