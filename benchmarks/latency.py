"""End-to-end latency: COMMIT returned -> message received from the JetStream stream.

Three processes, so none steals the GIL from another's timestamps:

* writer: psycopg (sync), one event per transaction (``emit()`` then COMMIT) at a steady rate;
  records ``time.monotonic()`` right after COMMIT returns, per event id;
* relay: ``build_relay(...)`` + ``relay.run(stop)`` in its own process (as in production);
* this process: an ordered JetStream push consumer on the stream, records ``time.monotonic()`` in
  the message callback, keyed by the ``ce-id`` header.

CLOCK_MONOTONIC is system-wide on Linux, so the two timestamps are comparable across processes.

Two modes:

* ``notify``: the default setup: the outbox's wake-up trigger, relay LISTENs, poll_interval 1.0 s. On
  PostgreSQL since issue 19 the trigger notifies only while the relay sleeps (a busy relay, whose
  fetches bring 2+ rows, polls every 2 ms, backing off, and sleeps after 25 ms without such a
  fetch: stores/postgres/wake.py);
* ``notify-every``: PostgreSQL, the trigger before issue 19 (NOTIFY at every insert), relay as in
  ``notify``: the old default, to compare with in the same run;
* ``poll``: outbox migrated with ``notify=False`` (no trigger), relay polls every ``--poll-interval``;
  on MariaDB (``--db mysql://...``), which has no notifications, this is the store's own wake-up
  (a fingerprint of the pending rows polled every 2-50 ms) with ``--poll-interval`` as the fallback;
* ``inline``: as ``notify``, plus the writer hands each committed id to an ``InlinePublisher``
  (publish right after commit, issue 4), the relay being the safety net;
* ``wal``: as ``notify`` for the writer (``emit()`` then COMMIT), the relay being
  ``relay --capture wal`` (``build_tail_relay``) with its default reader, the streaming one;
  ``wal-sql`` the same with the reader by SQL functions (``OUTBOXKIT_WAL_READER=sql``);
* ``floor``: no outbox and no relay: the writer commits a business row of the same width (a plain
  table) and publishes the same message (subject, payload, CloudEvents headers) itself with nats-py
  right after COMMIT returns. The lowest commit -> receive any design can reach on this machine;
  the issue 12 target was relay p99 <= 3x the floor p99, issue 19 asks <= 2x, at 200 and 1,000 events/s.

``--rates 200,1000`` runs every mode at each rate in one run and prints each mode's p99 as a ratio
of the same rate's floor. ``--db sqlite:///...`` (a fresh file per mode in a temporary directory)
measures the SQLite relay's file-change (inotify) wake-up.

    .venv/bin/python -m benchmarks.latency
    .venv/bin/python -m benchmarks.latency --rate 500 --duration 20 --modes notify,poll
    .venv/bin/python -m benchmarks.latency --db mysql://root@127.0.0.1:3306/test --modes poll --poll-interval 1.0
    .venv/bin/python -m benchmarks.latency --rates 200,1000 --modes floor,notify --duration 10
    .venv/bin/python -m benchmarks.latency --rates 200,1000 --modes floor,notify-every,notify --duration 10
    .venv/bin/python -m benchmarks.latency --db sqlite:///x --rates 200,1000 --modes floor,notify --duration 10
    .venv/bin/python -m benchmarks.latency --rates 200,1000 --modes floor,notify,wal,wal-sql --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Env,
    add_common_args,
    bench_env,
    create_stream,
    delete_stream,
    migrate_outbox,
    nats_connect,
    new_tag,
    percentile,
    table,
    write_results,
)
from benchmarks.floors import install_wakeup
from outboxkit.stores.base import TableRef

REPO = Path(__file__).resolve().parent.parent


def _schema(arg: str) -> str | None:
    return arg or None  # "" on the command line: no schema (SQLite)


def _is_sqlite(db: str) -> bool:
    return db.startswith("sqlite:")


@contextlib.asynccontextmanager
async def sqlite_env(broker: str, *, notify: bool) -> AsyncIterator[Env]:
    """A fresh SQLite file (no schemas there) with the outbox, and a fresh stream."""
    tag = new_tag()
    with tempfile.TemporaryDirectory(prefix="outboxkit-bench-") as tmp:
        env = Env(tag=tag, ref=TableRef("outbox"), db=f"sqlite:///{tmp}/bench.db", broker=broker)
        await asyncio.to_thread(migrate_outbox, env, notify=notify)
        await create_stream(broker, env.stream, [f"{env.subject_prefix}.>"])
        try:
            yield env
        finally:
            await delete_stream(broker, env.stream)


def _business_ddl(db: str, schema: str | None) -> str:
    """The floor's plain table: the outbox row's width (id, topic, key, payload, headers), only a
    primary key, no trigger, no other index."""
    from outboxkit.stores.registry import database_for

    name = TableRef("business", schema).quoted(database_for(db).quote)
    blob = "bytea" if db.startswith("postgres") else "blob"
    return (
        f"CREATE TABLE {name} (id varchar(40) PRIMARY KEY, topic varchar(255) NOT NULL, "
        f"event_key varchar(255), payload {blob} NOT NULL, headers varchar(4000) NOT NULL)"
    )


# -- child: relay ---------------------------------------------------------------------------------
async def _relay_child(db: str, broker: str, schema: str, poll_interval: float, window: int, capture: str) -> None:
    from outboxkit.relay.loop import RelayConfig
    from outboxkit.relay.process import build_relay
    from outboxkit.relay.tail import build_tail_relay
    from outboxkit.stores.base import TableRef

    build = build_tail_relay if capture == "wal" else build_relay
    relay = build(
        db,
        broker,
        ref=TableRef("outbox", _schema(schema)),
        config=RelayConfig(poll_interval=poll_interval, window=window),
    )
    first = await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await relay.run(stop, first=first)
    s = relay.stats
    print(json.dumps({"published": s.published, "batches": s.batches, "failed": s.failed_attempts}), flush=True)


# -- child: writer --------------------------------------------------------------------------------
def _writer_child(db: str, schema: str, topic: str, rate: float, duration: float, out: str, broker: str = "") -> None:
    import psycopg

    from benchmarks.common import is_postgres, key_for, payload
    from outboxkit import Outbox
    from outboxkit.relay.inline import InlinePublisher
    from outboxkit.stores.base import TableRef
    from outboxkit.stores.registry import database_for

    outbox = Outbox(schema=_schema(schema))
    inline = InlinePublisher(db, broker, ref=TableRef("outbox", _schema(schema))).start() if broker else None
    n = int(rate * duration)
    commits: dict[str, float] = {}
    behind = 0
    # PostgreSQL: psycopg's transaction(); other databases: their own sync driver, BEGIN ... COMMIT.
    conn: Any = psycopg.connect(db) if is_postgres(db) else database_for(db).connect(db)
    try:
        t0 = time.monotonic() + 0.2
        for i in range(n):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 0.01:
                behind += 1
            if is_postgres(db):
                with conn.transaction():
                    event_id = outbox.emit(conn, topic, payload(i), key=key_for(i, 1000))
            else:
                conn.execute("BEGIN")
                event_id = outbox.emit(conn, topic, payload(i), key=key_for(i, 1000))
                conn.execute("COMMIT")
            commits[event_id] = time.monotonic()  # COMMIT has returned
            if inline is not None:
                inline.submit([event_id])  # returns at once; publishes on its own thread
        elapsed = time.monotonic() - t0
    finally:
        conn.close()
    if inline is not None:
        inline.close()
    Path(out).write_text(json.dumps({"commits": commits, "elapsed": elapsed, "behind": behind}))


# -- child: floor writer (no outbox, publishes itself right after COMMIT) ---------------------------
async def _floor_writer_child(
    db: str, schema: str, topic: str, rate: float, duration: float, out: str, broker: str
) -> None:
    import psycopg
    import uuid_utils

    from benchmarks.common import is_postgres, key_for, payload
    from outboxkit.core.envelope import OutboxEvent, binary_headers
    from outboxkit.stores.registry import database_for

    database = database_for(db)
    table = TableRef("business", _schema(schema)).quoted(database.quote)
    style = "%s" if database.paramstyle in ("format", "pyformat") else "?"
    insert = f"INSERT INTO {table} (id, topic, event_key, payload, headers) VALUES ({', '.join([style] * 5)})"
    nc = await nats_connect(broker)
    js = nc.jetstream(publish_async_max_pending=100_000)
    n = int(rate * duration)
    commits: dict[str, float] = {}
    acks = []
    behind = 0
    pg = is_postgres(db)
    conn: Any = psycopg.connect(db) if pg else database.connect(db)
    try:
        t0 = time.monotonic() + 0.2
        for i in range(n):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.01:
                behind += 1
            # What emit() would encode (id, JSON payload, headers), into a plain table instead.
            event_id = str(uuid_utils.uuid7())
            body = json.dumps(payload(i), separators=(",", ":")).encode()
            key = key_for(i, 1000)
            if pg:
                with conn.transaction():
                    conn.execute(insert, (event_id, topic, key, body, "{}"))
            else:
                conn.execute("BEGIN")
                conn.execute(insert, (event_id, topic, key, body, "{}"))
                conn.execute("COMMIT")
            commits[event_id] = time.monotonic()  # COMMIT has returned
            event = OutboxEvent(seq=i + 1, id=event_id, topic=topic, payload=body, key=key)
            headers = binary_headers(event, "/outboxkit")
            headers["Nats-Msg-Id"] = event_id
            acks.append(await js.publish_async(topic, body, headers=headers))
            await asyncio.sleep(0)  # let nats-py's flusher send it now
        elapsed = time.monotonic() - t0
        await asyncio.gather(*acks)
    finally:
        conn.close()
        await nc.close()
    await asyncio.to_thread(
        Path(out).write_text, json.dumps({"commits": commits, "elapsed": elapsed, "behind": behind})
    )


# -- parent ---------------------------------------------------------------------------------------
def _child(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.latency", *args]


async def run_mode(args: argparse.Namespace, mode: str, rate: float) -> dict[str, Any]:
    wal = mode in ("wal", "wal-sql")
    notify = mode in ("notify", "notify-every", "inline", "floor") or wal
    poll = 1.0 if notify else args.poll_interval
    env_vars = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if wal:
        from outboxkit.stores.postgres.wal import READER_ENV

        env_vars[READER_ENV] = "sql" if mode == "wal-sql" else "stream"
    opened = (
        sqlite_env(args.broker, notify=notify)
        if _is_sqlite(args.db)
        else bench_env(args.db, args.broker, notify=notify)
    )
    async with opened as env:
        schema = env.ref.schema or ""
        if mode == "notify-every" and not _is_sqlite(env.db):
            await asyncio.to_thread(install_wakeup, env.db, env.ref, "notify-every")
        if mode == "floor":
            await asyncio.to_thread(_create_business, env.db, env.ref.schema)
        if wal:
            from outboxkit.stores.postgres.wal import migrate_wal

            await asyncio.to_thread(migrate_wal, env.db, env.ref)
        received: dict[str, float] = {}
        duplicates = 0

        async def on_msg(msg: Any) -> None:
            nonlocal duplicates
            now = time.monotonic()
            event_id = (msg.headers or {}).get("ce-id", "")
            if event_id in received:
                duplicates += 1
            else:
                received[event_id] = now

        nc = await nats_connect(env.broker)
        sub = await nc.jetstream().subscribe(
            f"{env.subject_prefix}.>", stream=env.stream, ordered_consumer=True, cb=on_msg
        )
        # The floor has no relay: a sleeping stand-in keeps the code below the same.
        relay_cmd = (
            [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"]
            if mode == "floor"
            else _child(
                "--relay-child", env.db, env.broker, schema, str(poll), str(args.window), "wal" if wal else "table"
            )
        )
        relay = await asyncio.create_subprocess_exec(
            *relay_cmd, cwd=REPO, env=env_vars, stdout=subprocess.PIPE, stdin=subprocess.PIPE
        )
        try:
            assert relay.stdout is not None
            line = await asyncio.wait_for(relay.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"relay child failed to start: {line!r}")
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                out = tmp.name
            try:
                writer = await asyncio.create_subprocess_exec(
                    *_child(
                        "--floor-child" if mode == "floor" else "--writer-child",
                        env.db,
                        schema,
                        env.topic(),
                        str(rate),
                        str(args.duration),
                        out,
                        env.broker if mode in ("inline", "floor") else "",
                    ),
                    cwd=REPO,
                    env=env_vars,
                )
                rc = await writer.wait()
                if rc != 0:
                    raise RuntimeError(f"writer child exited with {rc}")
                w = json.loads(await asyncio.to_thread(Path(out).read_text))
            finally:
                os.unlink(out)
            commits: dict[str, float] = w["commits"]
            # Stragglers: wait until everything arrived or a grace period passed.
            deadline = time.monotonic() + poll + 5
            while len(set(commits) & received.keys()) < len(commits) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            relay.send_signal(signal.SIGTERM)
            try:
                tail = await asyncio.wait_for(relay.communicate(b""), 30)
                relay_stats = json.loads(tail[0].decode().strip().splitlines()[-1]) if tail[0] else {}
            except (TimeoutError, ValueError, IndexError):
                relay.kill()
                relay_stats = {}
            await sub.unsubscribe()
            await nc.close()
            if wal:
                from outboxkit.stores.postgres.wal import drop_slot, resolve_slot

                await asyncio.to_thread(drop_slot, env.db, env.ref, resolve_slot(env.db, env.ref))
    lat = [(received[i] - t) * 1000 for i, t in commits.items() if i in received]
    missing = len(commits) - len(lat)
    return {
        "mode": mode,
        "db": "sqlite" if _is_sqlite(args.db) else args.db.split(":", 1)[0],
        "rate": rate,
        "poll_interval": poll,
        "notify_trigger": notify,
        "events": len(commits),
        "achieved_rate": len(commits) / w["elapsed"],
        "writer_behind_10ms": w["behind"],
        "received": len(lat),
        "missing": missing,
        "duplicates": duplicates,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
        # Coarse histogram: a mass near poll_interval means the relay slept through wake-ups.
        "histogram_ms": {
            f"<{hi}": sum(1 for x in lat if lo <= x < hi)
            for lo, hi in [(0, 10), (10, 50), (50, 100), (100, 250), (250, 500), (500, 900), (900, 10**9)]
        },
        "relay": relay_stats,
    }


def _create_business(db: str, schema: str | None) -> None:
    from outboxkit.stores.registry import database_for

    conn = database_for(db).connect(db, label="outboxkit-bench")
    try:
        conn.execute(_business_ddl(db, schema))
        with contextlib.suppress(Exception):
            conn.execute("COMMIT")  # drivers that opened a transaction for the DDL
    finally:
        conn.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    rates = [float(r) for r in args.rates.split(",")] if args.rates else [args.rate]
    for rate in rates:
        for mode in args.modes.split(","):
            print(
                f"mode {mode}: {rate:g} events/s for {args.duration:g}s ... (load {os.getloadavg()[0]:.1f})", flush=True
            )
            r = await run_mode(args, mode, rate)
            print(
                f"  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  max {r['max_ms']:.1f} ms  "
                f"({r['received']:,}/{r['events']:,} received, {r['achieved_rate']:.0f}/s written)",
                flush=True,
            )
            results.append(r)
    # Each mode's p99 against the floor measured at the same rate in this run (issue 12: <= 3x;
    # issue 19: <= 2x).
    for r in results:
        floor = next((f for f in results if f["mode"] == "floor" and f["rate"] == r["rate"]), None)
        r["p99_vs_floor"] = r["p99_ms"] / floor["p99_ms"] if floor and r["mode"] != "floor" else None
    return {"params": vars(args), "results": results}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--relay-child":
        db, broker, schema, poll, window, capture = sys.argv[2:8]
        asyncio.run(_relay_child(db, broker, schema, float(poll), int(window), capture))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--floor-child":
        db, schema, topic, rate, duration, out, broker = sys.argv[2:9]
        asyncio.run(_floor_writer_child(db, schema, topic, float(rate), float(duration), out, broker))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--writer-child":
        db, schema, topic, rate, duration, out = sys.argv[2:8]
        _writer_child(db, schema, topic, float(rate), float(duration), out, *sys.argv[8:9])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--rate", type=float, default=500.0, help="events (= transactions) per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of writing per mode")
    parser.add_argument("--rates", default=None, help="comma-separated rates, each run in turn (overrides --rate)")
    parser.add_argument(
        "--modes",
        default="notify,poll,inline",
        help="comma-separated: floor, notify, notify-every, poll, inline, wal, wal-sql",
    )
    parser.add_argument("--poll-interval", type=float, default=0.1, help="relay poll interval in poll mode")
    parser.add_argument("--window", type=int, default=1000, help="relay in-flight window")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print()
    rows = []
    for r in result["results"]:
        target = ""
        targeted = ("notify", "notify-every", "inline", "poll", "wal", "wal-sql")
        if r["p99_vs_floor"] is not None and r["mode"] in targeted:
            target = f"{r['p99_vs_floor']:.1f}x " + ("met" if r["p99_vs_floor"] <= 2 else "MISSED")
        rows.append(
            [
                r["rate"],
                r["mode"],
                r["poll_interval"],
                r["events"],
                r["received"],
                r["p50_ms"],
                r["p95_ms"],
                r["p99_ms"],
                r["max_ms"],
                target,
            ]
        )
    print(
        table(
            ["rate", "mode", "poll s", "events", "received", "p50 ms", "p95 ms", "p99 ms", "max ms", "p99<=2x floor"],
            rows,
        )
    )
    path = write_results("latency", result, disabled=args.no_json)
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
