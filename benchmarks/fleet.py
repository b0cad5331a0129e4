"""The relay fleet (``outboxkit relay --fleet FILE``, docs/fleet.md) toward issue 21's targets.

Three phases, each in processes of their own (fleet or relay, writer, and this process receiving):

* ``live``: ``--outboxes`` outboxes as PostgreSQL schemas of one database, each written at
  ``--rate`` events/s (one event per transaction), served by one fleet process; then the same total
  rate into ONE outbox served by one ``outboxkit relay``. Reported: delivered fraction and commit ->
  receive p50/p99 for both (the writer records ``time.monotonic()`` after COMMIT, this process at
  receipt: CLOCK_MONOTONIC is system-wide).
* ``backlog``: the same live outboxes, plus one tenant with ``--backlog`` rows pending at start:
  the live tenants' p99 while the backlog drains, and how much of the backlog drained meanwhile.
* ``idle``: ``--idle`` empty outboxes served by one fleet process: its CPU (share of one core,
  after ``--settle`` seconds) and the PostgreSQL connections it holds.

Issue targets (200 outboxes at 20 ev/s, 1,000 idle) need a quiet machine; on the shared one, run it
small and say the load:

    .venv/bin/python -m benchmarks.fleet --outboxes 20 --rate 20 --duration 10 --idle 100
    .venv/bin/python -m benchmarks.fleet --outboxes 200 --rate 20 --duration 30 --idle 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import (
    NATS_URL,
    PG_URL,
    create_stream,
    delete_stream,
    nats_connect,
    new_tag,
    percentile,
    write_results,
)
from outboxkit import Outbox, migrate
from outboxkit.stores.base import TableRef

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return env


def make_schemas(db: str, tag: str, count: int) -> list[str]:
    names = [f"{tag}_{i}" for i in range(count)]
    for name in names:
        migrate(db, TableRef("outbox", name))
    return names


def drop_schemas(db: str, names: list[str]) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'.encode())


def fleet_file(path: Path, db: str, broker: str, tag: str, schemas: list[str], **settings: Any) -> None:
    lines = ["[fleet]", f'broker = "{broker}"'] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    for name in schemas:
        lines += ["[[outbox]]", f'tenant = "{name}"', f'db = "{db}"', f'schema = "{name}"', f'topic_prefix = "{tag}."']
    path.write_text("\n".join(lines) + "\n")


# -- the writer (a child process) ------------------------------------------------------------------
def writer_child(db: str, schemas: list[str], rate_each: float, duration: float, out: str, prefix: str) -> None:
    """One event per transaction, round robin over ``schemas``, ``rate_each`` events/s each; topics
    start with ``prefix`` (the single relay's; a fleet adds its outboxes' ``topic_prefix`` itself)."""
    outboxes = [Outbox(table="outbox", schema=s) for s in schemas]
    total_rate = rate_each * len(schemas)
    stamps: dict[str, float] = {}
    with psycopg.connect(db, autocommit=True) as conn:
        start = time.monotonic()
        n = 0
        while True:
            due = start + n / total_rate
            now = time.monotonic()
            if due - start >= duration:
                break
            if due > now:
                time.sleep(due - now)
            box = outboxes[n % len(outboxes)]
            conn.execute("BEGIN")
            event_id = box.emit(conn, f"{prefix}{schemas[n % len(schemas)]}.orders.created", {"n": n})
            conn.execute("COMMIT")
            stamps[event_id] = time.monotonic()
            n += 1
    Path(out).write_text(json.dumps(stamps))


async def run_writer(
    db: str, schemas: list[str], rate_each: float, duration: float, prefix: str = ""
) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    cmd = [sys.executable, "-m", "benchmarks.fleet", "--writer-child", db, ",".join(schemas), str(rate_each)]
    cmd += [str(duration), out, prefix or "-"]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=REPO, env=_env())
    await proc.wait()
    stamps: dict[str, float] = json.loads(await asyncio.to_thread(Path(out).read_text))
    os.unlink(out)
    return stamps


class Receiver:
    """Receipt times by event id, from a JetStream push consumer on the run's stream."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.by_topic: dict[str, int] = {}

    async def start(self, url: str, stream: str) -> Any:
        nc = await nats_connect(url)

        async def on_msg(msg: Any) -> None:
            self.at.setdefault(msg.headers.get("ce-id", ""), time.monotonic())
            self.by_topic[msg.subject] = self.by_topic.get(msg.subject, 0) + 1

        await nc.jetstream().subscribe(">", stream=stream, cb=on_msg, ordered_consumer=True)
        return nc


def latency(stamps: dict[str, float], received: dict[str, float]) -> dict[str, Any]:
    lat = [received[i] - t for i, t in stamps.items() if i in received]
    return {
        "written": len(stamps),
        "delivered": len(lat),
        "delivered_fraction": round(len(lat) / max(1, len(stamps)), 4),
        "p50_ms": round(1000 * percentile(lat, 50), 1) if lat else None,
        "p99_ms": round(1000 * percentile(lat, 99), 1) if lat else None,
    }


async def start_process(args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "outboxkit", *args, cwd=REPO, env=_env(), stderr=subprocess.DEVNULL
    )


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def wait_ready(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise RuntimeError("not ready in time")
        await asyncio.sleep(0.2)


def all_leased(db: str, schemas: list[str]) -> bool:
    with psycopg.connect(db, autocommit=True) as conn:
        for name in schemas:
            row = conn.execute(
                f'SELECT count(*) FROM "{name}"."outbox_leases" WHERE owner IS NOT NULL AND expires_at > now()'.encode()
            ).fetchone()
            if not row or row[0] == 0:
                return False
    return True


async def phase_live(args: argparse.Namespace, tag: str, tmp: Path) -> dict[str, Any]:
    db, broker = args.db, args.broker
    out: dict[str, Any] = {}
    schemas = await asyncio.to_thread(make_schemas, db, f"{tag}f", args.outboxes)
    single = await asyncio.to_thread(make_schemas, db, f"{tag}s", 1)
    try:
        receiver = Receiver()
        nc = await receiver.start(broker, tag.upper())
        path = tmp / "fleet.toml"
        fleet_file(path, db, broker, tag, schemas, lease_ttl=15.0, **args.knobs)
        proc = await start_process(["relay", "--fleet", str(path), "--summary-interval", "0"])
        try:
            await wait_ready(lambda: all_leased(db, schemas))
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            stamps = await run_writer(db, schemas, args.rate, args.duration)
            await asyncio.sleep(args.grace)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        finally:
            await stop_process(proc)
        out["fleet"] = {**latency(stamps, receiver.at), "relay_core_percent": round(100 * cpu, 1)}
        print(f"  fleet of {args.outboxes} at {args.rate}/s each: {out['fleet']} load {os.getloadavg()[0]:.1f}")
        # The same total rate into one outbox, one relay.
        proc = await start_process(["relay", "--db", db, "--schema", single[0], "--broker", broker])
        try:
            await wait_ready(lambda: all_leased(db, single))
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            stamps = await run_writer(db, single, args.rate * args.outboxes, args.duration, f"{tag}.")
            await asyncio.sleep(args.grace)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        finally:
            await stop_process(proc)
        out["single"] = {**latency(stamps, receiver.at), "relay_core_percent": round(100 * cpu, 1)}
        print(f"  one outbox at {args.rate * args.outboxes}/s: {out['single']} load {os.getloadavg()[0]:.1f}")
        await nc.close()
    finally:
        await asyncio.to_thread(drop_schemas, db, schemas + single)
    return out


async def phase_backlog(args: argparse.Namespace, tag: str, tmp: Path) -> dict[str, Any]:
    db, broker = args.db, args.broker
    schemas = await asyncio.to_thread(make_schemas, db, f"{tag}b", args.outboxes + 1)
    big, live = schemas[0], schemas[1:]
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(
                f'INSERT INTO "{big}"."outbox" (topic, key, payload) SELECT %s, \'k\' || (i %% 100), '
                "convert_to('{}', 'UTF8') FROM generate_series(1, %s) i".encode(),
                [f"{big}.orders.created", args.backlog],
            )
        receiver = Receiver()
        nc = await receiver.start(broker, tag.upper())
        path = tmp / "fleet-backlog.toml"
        fleet_file(path, db, broker, tag, schemas, lease_ttl=15.0, **args.knobs)
        proc = await start_process(["relay", "--fleet", str(path), "--summary-interval", "0"])
        try:
            await wait_ready(lambda: all_leased(db, live))
            stamps = await run_writer(db, live, args.rate, args.duration)
            await asyncio.sleep(args.grace)
            big_done = receiver.by_topic.get(f"{tag}.{big}.orders.created", 0)
        finally:
            await stop_process(proc)
        await nc.close()
        out = {**latency(stamps, receiver.at), "backlog": args.backlog, "backlog_delivered_meanwhile": big_done}
        print(f"  {args.outboxes} live beside a backlog of {args.backlog}: {out} load {os.getloadavg()[0]:.1f}")
        return out
    finally:
        await asyncio.to_thread(drop_schemas, db, schemas)


def fleet_connections(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(
            b"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outboxkit-fleet'"
        ).fetchone()
    return int(row[0]) if row else 0


async def phase_idle(args: argparse.Namespace, tag: str, tmp: Path) -> dict[str, Any]:
    db, broker = args.db, args.broker
    schemas = await asyncio.to_thread(make_schemas, db, f"{tag}i", args.idle)
    try:
        path = tmp / "fleet-idle.toml"
        fleet_file(path, db, broker, tag, schemas)
        proc = await start_process(["relay", "--fleet", str(path), "--summary-interval", "0"])
        try:
            await wait_ready(lambda: all_leased(db, schemas), timeout=300)
            await asyncio.sleep(args.settle)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            peak = 0
            while time.monotonic() - t0 < args.duration:
                peak = max(peak, await asyncio.to_thread(fleet_connections, db))
                await asyncio.sleep(0.5)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        finally:
            await stop_process(proc)
        out = {"outboxes": args.idle, "core_percent": round(100 * cpu, 2), "pg_connections_peak": peak}
        print(f"  {args.idle} idle outboxes: {out} load {os.getloadavg()[0]:.1f}")
        return out
    finally:
        await asyncio.to_thread(drop_schemas, db, schemas)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tag = new_tag()
    await create_stream(args.broker, tag.upper(), [f"{tag}.>"])
    results: dict[str, Any] = {"load_start": os.getloadavg()[0]}
    try:
        with tempfile.TemporaryDirectory(prefix="outboxkit-fleet-") as tmp:
            phases = args.phases.split(",")
            if "live" in phases:
                results["live"] = await phase_live(args, tag, Path(tmp))
            if "backlog" in phases:
                results["backlog"] = await phase_backlog(args, tag, Path(tmp))
            if "idle" in phases:
                results["idle"] = await phase_idle(args, tag, Path(tmp))
    finally:
        await delete_stream(args.broker, tag.upper())
    results["load_end"] = os.getloadavg()[0]
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer-child":
        db, schemas, rate, duration, out, prefix = sys.argv[2:8]
        writer_child(db, schemas.split(","), float(rate), float(duration), out, "" if prefix == "-" else prefix)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=PG_URL)
    parser.add_argument("--broker", default=NATS_URL)
    parser.add_argument("--outboxes", type=int, default=200, help="live outboxes (PostgreSQL schemas)")
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per live outbox")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of writing (and of idle measuring)")
    parser.add_argument("--grace", type=float, default=3.0, help="seconds after writing before counting")
    parser.add_argument("--backlog", type=int, default=200_000, help="pending rows of the backlogged tenant")
    parser.add_argument("--idle", type=int, default=1000, help="idle outboxes")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before idle CPU is measured")
    parser.add_argument("--phases", default="live,backlog,idle")
    parser.add_argument("--fleet-knob", action="append", default=[], help="[fleet] setting NAME=NUMBER; repeatable")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    args.knobs = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.fleet_knob)}
    results = asyncio.run(main_async(args))
    path = write_results("fleet", {"params": vars(args), **results}, disabled=args.no_json)
    if path is not None:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
