"""A real slot invalidation on a PostgreSQL this test owns (``pgserver``; the shared server's
settings are never touched): ``max_slot_wal_keep_size`` of 1 MB, a stopped relay, WAL written past
it and a checkpoint. The relay then stops with one line, and ``--resume-from-now`` publishes every
row event (issue 18 item 3)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.wal import migrate_wal
from tests.conftest import Stream
from tests.helpers import emit_many, pending, read_all


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[str]:
    pgserver: Any = pytest.importorskip("pgserver")
    from pgserver._commands import pg_ctl

    server = pgserver.get_server(str(tmp_path / "pg"), cleanup_mode="delete")
    try:
        conf = Path(server.pgdata) / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\nwal_level = logical\nmax_slot_wal_keep_size = 1MB\n")
        pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        server.ensure_postgres_running()
        yield str(server.get_uri())
    finally:
        server.cleanup()


def invalidate(url: str, slot: str) -> None:
    """Write and switch WAL segments until a checkpoint has invalidated the slot."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE IF NOT EXISTS filler (x text)")
        deadline = time.monotonic() + 60
        while True:
            conn.execute(b"INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
            conn.execute(b"SELECT pg_switch_wal()")
            conn.execute(b"CHECKPOINT")
            row = conn.execute(b"SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()
            if row is not None and row[0] == "lost":
                return
            assert time.monotonic() < deadline, f"slot {slot} not invalidated: {row}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outboxkit", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
async def test_invalidated_slot_is_one_line_and_resume_from_now_loses_no_row(
    private_pg: str, nats_stream: Stream
) -> None:
    db, ref = private_pg, TableRef("outbox", "app")
    migrate(db, ref)
    slot = migrate_wal(db, ref)
    topic = nats_stream.topic("orders")
    # Committed while no relay runs; then the slot's WAL goes past the limit.
    ids = await asyncio.to_thread(emit_many, db, ref, topic, [{"i": i} for i in range(30)], key=lambda i: f"k{i % 3}")
    await asyncio.to_thread(invalidate, db, slot)

    args = ["relay", "--db", db, "--schema", "app", "--broker", nats_stream.url, "--capture", "wal", "--lease-ttl", "2"]
    gone = await asyncio.to_thread(cli, *args)
    assert gone.returncode == 1, gone.stderr
    lines = [line for line in gone.stderr.splitlines() if "invalidated" in line]
    assert len(lines) == 1 and "--resume-from-now" in lines[0], gone.stderr
    shown = await asyncio.to_thread(cli, "slot", "status", "--db", db, "--schema", "app")
    assert "wal_status lost" in shown.stdout and "--resume-from-now" in shown.stdout, shown
    status = await asyncio.to_thread(cli, "status", "--db", db, "--schema", "app")
    assert "invalidated: recover with relay --capture wal --resume-from-now" in status.stdout, status

    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "outboxkit", *args, "--resume-from-now"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(pending, db, ref) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # Committed after the recovery: tailed from the new slot.
        ids += await asyncio.to_thread(
            emit_many, db, ref, topic, [{"i": i} for i in range(30, 50)], key=lambda i: f"k{i % 3}"
        )
        got = await read_all(nats_stream.url, nats_stream.name, expect=50, timeout=60)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, err
    assert "not recoverable" in err, err
    assert {m.event_id for m in got} == set(ids)
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(b"SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()
    assert row is not None and row[0] != "lost"
