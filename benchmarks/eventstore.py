"""The event store on PostgreSQL: appends with 8 writers against the raw INSERT floor of the same
run, projection throughput, and the load time of a 10,000-event aggregate with and without a
snapshot.

* ``floor``: each writer process runs ``BEGIN; INSERT <a row of the outbox's width>; COMMIT`` into a
  table with the outbox's columns and primary key, no other index and NO trigger
  (``benchmarks.floors.insert_floor``): the physical floor an append cannot beat. Measured at 1 and
  at ``--writers`` writers in every repetition, interleaved with the appends. (Before issue 19 this
  mode called ``emit()`` into an outbox carrying the NOTIFY trigger, which caps commits: not a floor);
* ``append``: at 1 and at ``--writers`` writers, each writer appends one event per transaction with
  an exact expected version to its own 50 streams (``EventStore.append``: head UPDATE, then the event INSERT);
* projection: a ``ProjectionRunner`` catching up over every appended event with a handler that
  upserts a per-stream counter (one statement per event) in batches of 500, checkpoint included;
* aggregate: ``Repository.load`` of one stream of 10,000 events, without a snapshot and with one
  (``snapshot_every=1000``: loads the snapshot at 10,000 and no event).

With ``--eventsourcing-python PATH`` (an interpreter with ``eventsourcing[postgres]`` installed:
it is not an outboxkit dependency), the same appends and loads run with the ``eventsourcing``
package on the same PostgreSQL, interleaved with ours (benchmarks/eventsourcing_peer.py), and its
follower (a ``ProcessApplication`` with an empty policy) catches up over as many events as our
projection did.

The relay does not run (the write side and the readers are measured). A fresh schema per run. Every
repetition records the 1-minute load before and after; medians of ``--reps`` (default 3), each rep listed.

    ../shared/quiet -- .venv/bin/python -m benchmarks.eventstore --reps 3
    python3 -m venv /tmp/esb && /tmp/esb/bin/pip install 'eventsourcing[postgres]'
    .venv/bin/python -m benchmarks.eventstore --eventsourcing-python /tmp/esb/bin/python
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_common_args,
    drop_schema,
    load_note,
    new_tag,
    payload,
    rep_load,
    reps_summary,
    table,
    write_results,
)
from benchmarks.floors import create_floor_table, insert_floor
from outboxkit.eventstore import (
    Aggregate,
    EventStore,
    EventTypes,
    NewEvent,
    ProjectionRunner,
    Repository,
    migrate_event_store,
)
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for


def _writer(db: str, schema: str, ready: Any, duration: float, seed: int, out: Any, tag: str) -> None:
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    store = EventStore(schema=schema)
    versions = {f"{tag}-w{seed}-s{s}": 0 for s in range(50)}
    streams = list(versions)
    done = 0
    ready.wait()  # every writer imported and connected: on a loaded machine that takes seconds
    stop_at = time.time() + duration
    while time.time() < stop_at:
        conn.execute(database.begin_sql)
        stream = streams[done % 50]
        versions[stream] = store.append(
            conn, stream, NewEvent("OrderPlaced", payload(done)), expected=versions[stream]
        ).version
        conn.execute("COMMIT")
        done += 1
    conn.close()
    out.put(done)


def appends_run(db: str, schema: str, writers: int, duration: float, tag: str) -> dict[str, Any]:
    """Appends/s of ``writers`` processes, with the load before and after."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(writers)
    procs = [ctx.Process(target=_writer, args=(db, schema, ready, duration, w, out, tag)) for w in range(writers)]
    record: dict[str, Any] = {"writers": writers}
    with rep_load(record):
        for p in procs:
            p.start()
        counts = [out.get(timeout=duration + 120) for _ in procs]
        for p in procs:
            p.join()
    record["tx_per_s"] = sum(counts) / duration
    return record


def appends_vs_floor(db: str, schema: str, writer_counts: list[int], duration: float, reps: int) -> dict[str, Any]:
    """Per repetition and writer count: the physical floor, then the appends, back to back in this
    run; per writer count, the medians and their ratio with every rep listed. ``schema`` must hold
    the event store; the trigger-less floor table is created in it here."""
    create_floor_table(db, schema)
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        for writers in writer_counts:
            floor = insert_floor(db, schema, writers, duration)
            append = appends_run(db, schema, writers, duration, f"r{rep}w{writers}")
            runs.append({"rep": rep + 1, "writers": writers, "floor": floor, "append": append})
            print(
                f"  rep {rep + 1}: {writers} writers, floor {floor['tx_per_s']:>8,.0f} tx/s ({load_note(floor)}),"
                f" append {append['tx_per_s']:>8,.0f} tx/s ({load_note(append)})",
                flush=True,
            )
    summary = []
    for writers in writer_counts:
        mine = [r for r in runs if r["writers"] == writers]
        floors = reps_summary([r["floor"]["tx_per_s"] for r in mine], [r["floor"] for r in mine])
        appends = reps_summary([r["append"]["tx_per_s"] for r in mine], [r["append"] for r in mine])
        ratio = appends["median"] / floors["median"]
        summary.append({"writers": writers, "floor": floors, "append": appends, "ratio": ratio})
    return {"runs": runs, "summary": summary}


class Counter:
    name = "bench_counter"

    def __init__(self, schema: str) -> None:
        self.table = f'"{schema}"."counter"'

    def handle(self, conn: Any, event: Any) -> None:
        conn.execute(
            f"INSERT INTO {self.table} (stream_id, events) VALUES (%s, 1) "
            f"ON CONFLICT (stream_id) DO UPDATE SET events = {self.table}.events + 1",
            [event.stream_id],
        )

    def reset(self, conn: Any) -> None:
        conn.execute(f"DELETE FROM {self.table}")


@dataclass(frozen=True)
class Placed:
    order_id: int
    customer: str
    details: dict[str, Any]  # the rest of the ~200-byte payload


class Order(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.count = 0
        self.amount = 0

    def apply(self, event: object) -> None:
        if isinstance(event, Placed):
            self.count += 1
            self.amount += event.order_id % 100


def projection_run(db: str, schema: str) -> tuple[int, float]:
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    conn.execute(f'CREATE TABLE "{schema}"."counter" (stream_id text PRIMARY KEY, events bigint NOT NULL)')
    conn.close()
    runner = ProjectionRunner(EventStore(schema=schema), Counter(schema), db, batch=500)
    started = time.perf_counter()
    handled = runner.catch_up()
    elapsed = time.perf_counter() - started
    runner.close()
    return handled, handled / elapsed


def aggregate_run(db: str, schema: str, events: int) -> dict[str, float]:
    store = EventStore(schema=schema)
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    types = EventTypes().register(Placed, "OrderPlaced")
    order = Order("big-order")
    repo = Repository(store, Order, types, snapshot_every=1000)
    for i in range(events):
        p = payload(i)
        order.record(Placed(p["order_id"], p["customer"], p))
        if len(order.pending) == 1000:
            conn.execute(database.begin_sql)
            repo.save(conn, order)
            conn.execute("COMMIT")
    plain = Repository(store, Order, types)
    out: dict[str, float] = {}
    for name, r in (("without_snapshot_ms", plain), ("with_snapshot_ms", repo)):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            loaded = r.load(conn, "big-order")
            times.append((time.perf_counter() - started) * 1000)
            assert (loaded.version == events and loaded.count == (events if r is plain else 0)) or r is repo
        out[name] = statistics.median(times)
    conn.close()
    return out


def peer(python: str, db: str, what: str, *args: str) -> dict[str, Any]:
    """Run benchmarks/eventsourcing_peer.py in a schema of its own; its JSON result."""
    schema = new_tag()
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    database.create_namespace(conn, schema)
    conn.close()
    try:
        script = Path(__file__).with_name("eventsourcing_peer.py")
        done = subprocess.run([python, str(script), what, "--schema", schema, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"eventsourcing_peer.py {what} failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        drop_schema(db, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of writing per mode")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3, help="floor/append pairs, interleaved; medians reported")
    parser.add_argument("--aggregate-events", type=int, default=10_000)
    parser.add_argument("--eventsourcing-python", help="an interpreter with eventsourcing[postgres] installed")
    args = parser.parse_args()
    schema = new_tag()
    results: dict[str, Any] = {"eventsourcing_tx_per_s": []}
    es = args.eventsourcing_python
    writer_counts = sorted({1, args.writers})
    try:
        migrate_event_store(args.db, TableRef("events", schema))
        results["appends"] = appends_vs_floor(args.db, schema, writer_counts, args.duration, args.reps)
        for rep in range(args.reps if es else 0):
            got = peer(es, args.db, "appends", "--writers", str(args.writers), "--duration", str(args.duration))
            results["eventsourcing_tx_per_s"].append(got["tx_per_s"])
            results["eventsourcing_version"] = got["eventsourcing"]
            print(f"  rep {rep + 1}: {args.writers} writers, eventsourcing: {got['tx_per_s']:>8,.0f} tx/s", flush=True)
        handled, rate = projection_run(args.db, schema)
        results["projection"] = {"events": handled, "events_per_s": rate}
        print(f"  projection: {handled:,} events at {rate:,.0f} events/s", flush=True)
        if es:
            results["eventsourcing_follower"] = peer(es, args.db, "follow", "--events", str(max(handled, 500)))
            print(f"  eventsourcing follower: {results['eventsourcing_follower']}", flush=True)
        results["aggregate"] = aggregate_run(args.db, schema, args.aggregate_events)
        print(f"  aggregate of {args.aggregate_events:,} events: {results['aggregate']}", flush=True)
        if es:
            results["eventsourcing_aggregate"] = peer(es, args.db, "load", "--events", str(args.aggregate_events))
            print(f"  eventsourcing aggregate: {results['eventsourcing_aggregate']}", flush=True)
    finally:
        drop_schema(args.db, schema)
    by_writers = {s["writers"]: s for s in results["appends"]["summary"]}
    agg = results["aggregate"]
    theirs = results.get("eventsourcing_aggregate", {})
    follower = results.get("eventsourcing_follower", {})
    es_rate = statistics.median(results["eventsourcing_tx_per_s"]) if results["eventsourcing_tx_per_s"] else None

    def vs(ours: float, other: float | None, *, higher_is_better: bool) -> str:
        if not other:
            return "-"
        return f"{ours / other:.1f}x" if higher_is_better else f"{other / ours:.1f}x faster"

    def theirs_ms(name: str) -> str:
        return f"{theirs[name]:,.1f}" if theirs else "-"

    print()
    print(
        table(
            ["measure", "outboxkit", "INSERT floor", "ratio to floor", "eventsourcing", "vs eventsourcing"],
            [
                *[
                    [
                        f"appends, {w} writer{'s' if w > 1 else ''} (tx/s)",
                        f"{s['append']['median']:,.0f}",
                        f"{s['floor']['median']:,.0f}",
                        f"{s['ratio']:.2f}",
                        f"{es_rate:,.0f}" if es_rate and w == args.writers else "-",
                        vs(s["append"]["median"], es_rate, higher_is_better=True) if w == args.writers else "-",
                    ]
                    for w, s in sorted(by_writers.items())
                ],
                [
                    "projection catch-up (events/s)",
                    f"{results['projection']['events_per_s']:,.0f}",
                    "-",
                    "-",
                    f"{follower['events_per_s']:,.0f}" if follower else "-",
                    vs(results["projection"]["events_per_s"], follower.get("events_per_s"), higher_is_better=True),
                ],
                [
                    f"load {args.aggregate_events:,} events (ms)",
                    f"{agg['without_snapshot_ms']:,.1f}",
                    "-",
                    "-",
                    theirs_ms("without_snapshot_ms"),
                    vs(agg["without_snapshot_ms"], theirs.get("without_snapshot_ms"), higher_is_better=False),
                ],
                [
                    "load from snapshot (ms)",
                    f"{agg['with_snapshot_ms']:,.1f}",
                    "-",
                    "-",
                    theirs_ms("with_snapshot_ms"),
                    vs(agg["with_snapshot_ms"], theirs.get("with_snapshot_ms"), higher_is_better=False),
                ],
            ],
        )
    )
    print(f"medians of {args.reps} reps, each listed above and in the JSON (floor and appends in this run)")
    path = write_results("eventstore", {"params": vars(args), "results": results}, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
