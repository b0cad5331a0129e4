"""Shared helpers for the benchmarks: isolated schema (PostgreSQL) or database (MariaDB) + JetStream
stream per run, payloads, percentiles, tables and JSON results.

Every run creates its own schema ``bench_<hex>`` and its own stream ``BENCH_<HEX>`` capturing
``bench_<hex>.>``, and removes both at the end (try/finally). Shared services are never restarted.
``--db`` takes any database URL outboxkit supports (``mysql://root@127.0.0.1:3306/test`` for MariaDB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

import outboxkit
from benchmarks.quietness import FOREIGN_MAX, CpuWatch
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: On 2 cores a 1-minute load above this means something else shared the cores: not quotable.
QUIET_LOAD = 1.5
#: The load when the benchmark process started (write_results records it next to the load at the end).
LOAD_AT_START = os.getloadavg()
#: Other work's CPU over the whole run (benchmarks/quietness.py): the verdict on quiet.
RUN_WATCH = CpuWatch()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=PG_URL, help="database URL, PostgreSQL or MariaDB (default %(default)s)")
    parser.add_argument("--broker", default=NATS_URL, help="NATS URL (default %(default)s)")
    parser.add_argument("--no-json", action="store_true", help="do not write benchmarks/results/*.json")


@dataclass
class Env:
    tag: str  # bench_<hex>: schema name and subject prefix
    ref: TableRef
    db: str
    broker: str

    @property
    def stream(self) -> str:
        return self.tag.upper()

    @property
    def subject_prefix(self) -> str:
        return self.tag

    def topic(self, name: str = "orders.created") -> str:
        return f"{self.tag}.{name}"


def new_tag() -> str:
    return f"bench_{secrets.token_hex(4)}"


def migrate_outbox(env: Env, *, notify: bool) -> None:
    """(Re)create the outbox in the run's schema; notify=False drops the NOTIFY trigger."""
    outboxkit.migrate(env.db, env.ref, notify=notify)


def drop_schema(db: str, schema: str) -> None:
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    try:
        database.drop_namespace(conn, schema)
    finally:
        conn.close()


def is_postgres(db: str) -> bool:
    return database_for(db).name == "postgresql"


async def nats_connect(url: str) -> Any:
    import nats

    return await nats.connect(servers=[url], name="outboxkit-bench", connect_timeout=3, pending_size=64 * 1024 * 1024)


async def create_stream(url: str, name: str, subjects: Sequence[str]) -> None:
    nc = await nats_connect(url)
    try:
        js = nc.jetstream()
        # File storage, the default kind a relay user runs (and the one the relay is compared to).
        await js.add_stream(name=name, subjects=list(subjects))
    finally:
        await nc.close()


async def purge_stream(url: str, name: str) -> None:
    nc = await nats_connect(url)
    try:
        await nc.jetstream().purge_stream(name)
    finally:
        await nc.close()


async def delete_stream(url: str, name: str) -> None:
    nc = await nats_connect(url)
    try:
        await nc.jetstream().delete_stream(name)
    except Exception as exc:
        print(f"warning: could not delete stream {name}: {exc}")
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def bench_env(db: str, broker: str, *, notify: bool = True) -> AsyncIterator[Env]:
    """A fresh schema with the outbox, and a fresh stream; both removed at the end."""
    tag = new_tag()
    env = Env(tag=tag, ref=TableRef("outbox", tag), db=db, broker=broker)
    stream_created = False
    try:
        await asyncio.to_thread(migrate_outbox, env, notify=notify)
        await create_stream(broker, env.stream, [f"{env.subject_prefix}.>"])
        stream_created = True
        yield env
    finally:
        if stream_created:
            await delete_stream(broker, env.stream)
        await asyncio.to_thread(drop_schema, db, tag)


@contextlib.contextmanager
def pg_schema(db: str) -> Iterator[str]:
    """Just a schema (for write-only benchmarks); dropped at the end."""
    tag = new_tag()
    try:
        yield tag
    finally:
        drop_schema(db, tag)


def payload(i: int) -> dict[str, Any]:
    """About 200 bytes of JSON once encoded."""
    return {
        "order_id": i,
        "customer": f"customer-{i % 1000:04d}",
        "status": "created",
        "currency": "EUR",
        "amount_cents": 1000 + (i * 37) % 90000,
        "items": [{"sku": f"SKU-{(i * 7) % 10000:05d}", "qty": 1 + i % 5}],
        "note": "x" * 48,
    }


def key_for(i: int, keys: int) -> str:
    return f"customer-{i % keys}"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of an unsorted sequence."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }
    with contextlib.suppress(Exception), psycopg.connect(PG_URL) as conn:
        info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        info["pg_synchronous_commit"] = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
        info["pg_fsync"] = conn.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
    with contextlib.suppress(Exception):
        maria = database_for(MARIADB_URL).connect(MARIADB_URL, label="outboxkit-bench")
        try:
            info["mariadb"], info["innodb_flush_log_at_trx_commit"], info["sync_binlog"] = maria.execute(
                "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog"
            ).fetchone()
        finally:
            maria.close()
    with contextlib.suppress(Exception):
        import nats

        info["nats_py"] = nats.__version__ if hasattr(nats, "__version__") else "?"
    info["packages"] = package_versions()
    return info


#: Distributions whose versions a result file records (the project and every client it drives).
PACKAGES = (
    "outboxkit",
    "psycopg",
    "psycopg-binary",
    "nats-py",
    "confluent-kafka",
    "redis",
    "aio-pika",
    "aiormq",
    "paho-mqtt",
    "aiomqtt",
    "asyncmy",
    "PyMySQL",
)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def load1() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


@contextlib.contextmanager
def rep_load(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Record the 1-minute load before and after one repetition into ``record``: a figure taken
    while other work shared the cores is marked by it, in the printout and in the JSON."""
    record["load_before"] = load1()
    watch = CpuWatch()
    try:
        yield record
    finally:
        record["load_after"] = load1()
        record["foreign_cpu"] = watch.foreign_share()


def load_note(record: dict[str, Any]) -> str:
    """``load 0.4->1.9, others 1%`` for a record of :func:`rep_load`, with ``NOT QUIET`` when other
    work took more than :data:`FOREIGN_MAX` of the machine (the load counts the benchmark's own work)."""
    before, after, foreign = record["load_before"], record["load_after"], record.get("foreign_cpu")
    if foreign is None:
        noisy = " NOT QUIET" if max(before, after) >= QUIET_LOAD else ""
        return f"load {before:.1f}->{after:.1f}{noisy}"
    noisy = " NOT QUIET" if foreign >= FOREIGN_MAX else ""
    return f"load {before:.1f}->{after:.1f}, others {foreign:.0%}{noisy}"


def reps_summary(values: Sequence[float], loads: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The median of the repetitions with every repetition listed (and its load, when given): a
    median of fewer than 3 is flagged, so a single run cannot pass for a figure."""
    return {
        "median": median(values),
        "reps": len(values),
        "each": list(values),
        "loads": [(r["load_before"], r["load_after"]) for r in loads],
        "foreign_cpu": [r.get("foreign_cpu") for r in loads],
        "enough_reps": len(values) >= 3,
    }


def write_results(name: str, data: dict[str, Any], *, disabled: bool = False) -> Path | None:
    if disabled:
        return None
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    path = RESULTS_DIR / f"{name}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    end = os.getloadavg()
    foreign = RUN_WATCH.foreign_share()
    # The load at the end counts the benchmark's own relay, database and broker (about 2 on 2
    # cores): the verdict is the load before it started and other work's CPU during it.
    quiet = LOAD_AT_START[0] < QUIET_LOAD and (foreign is None or foreign < FOREIGN_MAX)
    if foreign is None:
        quiet = quiet and end[0] < QUIET_LOAD
    load = {"at_start": LOAD_AT_START, "at_end": end, "foreign_cpu": foreign, "quiet": quiet}
    doc = {"benchmark": name, "date": now.isoformat(timespec="seconds"), "load": load, "machine": machine(), **data}
    others = "" if foreign is None else f", other work {foreign:.1%} of the machine"
    if not quiet:
        print(f"load {LOAD_AT_START[0]:.1f} at start{others}: not a quiet machine, do not quote")
    else:
        print(f"quiet: load {LOAD_AT_START[0]:.1f} at start{others}")
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


async def pending_rows(conn: Any, env: Env) -> int:
    """Rows the relay still has to deliver (``conn``: a psycopg AsyncConnection, or a sync
    connection of ``Database.connect`` for other databases)."""
    table = env.ref.quoted(database_for(env.db).quote)
    sql = f"SELECT count(*) FROM {table} WHERE delivered_at IS NULL AND dead_at IS NULL"
    if isinstance(conn, psycopg.AsyncConnection):
        cur = await conn.execute(sql)
        row = await cur.fetchone()
    else:
        row = await asyncio.to_thread(lambda: conn.execute(sql).fetchone())
    assert row is not None
    return int(row[0])


@contextlib.asynccontextmanager
async def checker(db: str) -> AsyncIterator[Any]:
    """A connection for :func:`pending_rows`."""
    if is_postgres(db):
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            yield conn
        return
    conn = database_for(db).connect(db, label="outboxkit-bench")
    try:
        yield conn
    finally:
        conn.close()


async def relay_run(env: Env, n: int, *, window: int, batch_size: int, timeout: float) -> dict[str, Any]:
    """Run an in-process relay over ``env`` until the ``n`` pre-written events are delivered (or
    ``timeout``); the same measurement for every bus, so the figures compare."""
    from outboxkit.relay.loop import RelayConfig
    from outboxkit.relay.process import build_relay

    relay = build_relay(
        env.db, env.broker, ref=env.ref, config=RelayConfig(batch_size=batch_size, window=window, poll_interval=1.0)
    )
    first = await relay.start()
    stop = asyncio.Event()
    async with checker(env.db) as check:
        t0 = time.perf_counter()
        task = asyncio.create_task(relay.run(stop, first=first))
        try:
            deadline = t0 + timeout
            # Cheap in-loop progress check first, then the authoritative one: 0 pending rows.
            while relay.stats.published < n and time.perf_counter() < deadline and not task.done():
                await asyncio.sleep(0.005)
            while await pending_rows(check, env) > 0 and time.perf_counter() < deadline and not task.done():
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - t0
            left = await pending_rows(check, env)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    delivered = n - left
    return {
        "seconds": elapsed,
        "events": delivered,
        "events_per_s": delivered / elapsed,
        "pending_left": left,
        "batches": relay.stats.batches,
        "failed_attempts": relay.stats.failed_attempts,
    }


def summarize_windows(runs: list[dict[str, Any]], windows: Sequence[int], batch_size: int) -> list[dict[str, Any]]:
    """Per window: the median relay and ceiling rates over the repetitions, and their ratio."""
    summary = []
    for window in windows:
        mine = [r for r in runs if r["window"] == window]
        rel = median([r["relay"]["events_per_s"] for r in mine])
        ceil = median([r["ceiling"]["events_per_s"] for r in mine])
        summary.append(
            {
                "window": window,
                "batch_size": batch_size,
                "relay_median": rel,
                "ceiling_median": ceil,
                "ratio": rel / ceil,
                "reps": len(mine),
                "relay_all": [round(r["relay"]["events_per_s"]) for r in mine],
                "ceiling_all": [round(r["ceiling"]["events_per_s"]) for r in mine],
                "loads": [(r.get("load_before"), r.get("load_after")) for r in mine],
            }
        )
    return summary


def report_windows(name: str, result: dict[str, Any], started: float, *, disabled: bool) -> None:
    """Print the per-window table (relay, ceiling, ratio against the 0.6 target) and save ``result``."""
    print()
    rows = [
        [
            s["window"],
            s["batch_size"],
            s["relay_median"],
            s["ceiling_median"],
            round(s["ratio"], 2),
            "met" if s["ratio"] >= 0.6 else "MISSED",
        ]
        for s in result["summary"]
    ]
    print(table(["window", "batch", "relay ev/s", "ceiling ev/s", "ratio", "target>=0.6"], rows))
    best = max(result["summary"], key=lambda s: s["relay_median"])
    print(
        f"\nbest window: {best['window']} ({best['relay_median']:,.0f} events/s, median of {best['reps']})"
        f"; total {time.perf_counter() - started:.0f}s"
    )
    result["best_window"] = best["window"]
    path = write_results(name, result, disabled=disabled)
    if path:
        print(f"results: {path}")
