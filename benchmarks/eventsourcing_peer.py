"""The ``eventsourcing`` package (pyeventsourcing) on the same PostgreSQL, for benchmarks/eventstore.py.

Runs under an interpreter that has ``eventsourcing[postgres]`` installed (it is not an outboxkit
dependency; this file imports nothing of outboxkit), and prints one JSON object:

    python benchmarks/eventsourcing_peer.py appends --schema S --writers 8 --duration 6
    python benchmarks/eventsourcing_peer.py load --schema S --events 10000
    python benchmarks/eventsourcing_peer.py follow --schema S --events 3000

``appends``: each writer process owns an ``Application`` and 50 aggregates (created before the
clock starts) and saves one new event per transaction. ``load``: ``repository.get`` of a
10,000-event aggregate, without a snapshot and after ``take_snapshot``. ``follow``: a follower
(``ProcessApplication`` with an empty policy) catching up over ``events`` events of 50 aggregates.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import ProcessApplication

PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres", "dbname": "test"}


class Order(Aggregate):
    @event("Created")
    def __init__(self, customer: str) -> None:
        self.customer = customer
        self.count = 0

    @event("Placed")
    def place(self, details: dict[str, Any]) -> None:
        self.count += 1


class Orders(Application):
    is_snapshotting_enabled = True


def _env(schema: str, *, create: bool = True) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": os.environ.get("BENCH_PG_DB", PG["dbname"]),
        "POSTGRES_HOST": PG["host"],
        "POSTGRES_PORT": PG["port"],
        "POSTGRES_USER": PG["user"],
        "POSTGRES_PASSWORD": "",
        "POSTGRES_SCHEMA": schema,
        "CREATE_TABLE": "y" if create else "n",
    }


def _details(i: int) -> dict[str, Any]:
    return {"order_id": i, "customer": f"customer-{i % 1000:04d}", "status": "created", "note": "x" * 120}


def _writer(schema: str, ready: Any, duration: float, out: Any) -> None:
    try:
        app = Orders(env=_env(schema, create=False))  # the parent created the tables
        orders = [Order(f"c{i}") for i in range(50)]
        app.save(*orders)
        ready.wait()
    except BaseException:
        ready.abort()  # the others stop waiting; the run fails with this writer's traceback
        out.put(None)
        raise
    done = 0
    stop_at = time.time() + duration
    try:
        while time.time() < stop_at:
            order = orders[done % 50]
            order.place(_details(done))
            app.save(order)
            done += 1
    except BaseException:
        out.put(None)
        raise
    out.put(done)


def appends(schema: str, writers: int, duration: float) -> dict[str, float]:
    Orders(env=_env(schema))  # create the tables once, before the writers race to
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(writers)
    procs = [ctx.Process(target=_writer, args=(schema, ready, duration, out)) for _ in range(writers)]
    for p in procs:
        p.start()
    counts = [out.get(timeout=duration + 300) for _ in procs]
    for p in procs:
        p.join()
    if None in counts:
        raise SystemExit("a writer failed (traceback above)")
    return {"tx_per_s": sum(counts) / duration}


def load(schema: str, events: int) -> dict[str, float]:
    app = Orders(env=_env(schema))
    order = Order("big")
    for i in range(events - 1):
        order.place(_details(i))
    app.save(order)  # one transaction of ``events`` events (Created plus the Placed ones)
    out: dict[str, float] = {}
    for name in ("without_snapshot_ms", "with_snapshot_ms"):
        if name == "with_snapshot_ms":
            app.take_snapshot(order.id)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            loaded = app.repository.get(order.id)
            times.append((time.perf_counter() - started) * 1000)
            assert loaded.count == events - 1
        out[name] = statistics.median(times)
    return out


class Follower(ProcessApplication[Any]):
    """A follower whose policy does nothing: what is left is reading, decoding and recording the
    tracking position of each event (one transaction per event, as the package does)."""

    def policy(self, domain_event: Any, processing_event: Any) -> None:
        return None


def follow(schema: str, events: int) -> dict[str, float]:
    leader = Orders(env=_env(schema))
    orders = [Order(f"c{i}") for i in range(50)]
    for i in range(events - len(orders)):
        orders[i % 50].place(_details(i))
    leader.save(*orders)
    follower = Follower(env=_env(schema))
    follower.follow(leader.name, leader.notification_log)
    started = time.perf_counter()
    follower.pull_and_process(leader.name)
    elapsed = time.perf_counter() - started
    done = follower.recorder.max_tracking_id(leader.name) or 0
    assert done >= events, (done, events)
    return {"events": done, "events_per_s": done / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("appends", "load", "follow"))
    parser.add_argument("--schema", required=True)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    if args.what == "appends":
        result = appends(args.schema, args.writers, args.duration)
    elif args.what == "load":
        result = load(args.schema, args.events)
    else:
        result = follow(args.schema, args.events)
    from importlib.metadata import version

    result["eventsourcing"] = version("eventsourcing")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
