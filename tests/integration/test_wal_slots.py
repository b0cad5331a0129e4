"""Slots of ``relay --capture wal`` on a shared server: names that do not collide across databases,
old names adopted, a gone slot that stops the relay with one line (issue 18 items 3 and 4)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from outboxkit.errors import PositionLostError
from outboxkit.migrate import migrate
from outboxkit.relay import RelayConfig
from outboxkit.relay.tail import build_tail_relay
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.wal import PostgresWalReader, drop_slot, legacy_slot_name, migrate_wal, resolve_slot
from tests.conftest import Stream, unique
from tests.helpers import emit_many


@pytest.fixture
def second_db(pg_url: str) -> Iterator[str]:
    """Another database on the same server (a second service, a test database beside production)."""
    name = unique("okt_db")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for (slot,) in conn.execute(
            b"SELECT slot_name FROM pg_replication_slots WHERE database = %s", [name]
        ).fetchall():
            conn.execute(b"SELECT pg_drop_replication_slot(%s)", [slot])
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def slots_of(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            b"SELECT slot_name FROM pg_replication_slots WHERE database = current_database() ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


def test_the_same_outbox_in_two_databases_of_one_server_gets_two_slots(
    pg_url: str, pg_ref: TableRef, second_db: str
) -> None:
    """Regression: the name came from the table alone, so the second database's migrate found the
    first one's slot, created nothing and exited 0; its relay then fought the other reader."""
    migrate(second_db, pg_ref)
    first = migrate_wal(pg_url, pg_ref)
    try:
        second = migrate_wal(second_db, pg_ref)
        assert first != second
        assert first in slots_of(pg_url) and second in slots_of(second_db)
        assert len(first) <= 63 and len(second) <= 63
    finally:
        drop_slot(pg_url, pg_ref, first)


async def test_a_slot_of_the_old_name_is_adopted(pg_url: str, pg_ref: TableRef, nats_stream: Stream) -> None:
    """An upgrade: the slot made under the old name (table alone) keeps working; nothing new is made."""
    legacy = legacy_slot_name(pg_ref)
    assert legacy is not None
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE PUBLICATION \"{legacy}\" FOR TABLE {pg_ref.qualified} WITH (publish = 'insert')".encode())
        conn.execute(b"SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [legacy])
    try:
        assert migrate_wal(pg_url, pg_ref) == legacy
        assert [s for s in slots_of(pg_url) if pg_ref.schema and pg_ref.schema.lower() in s] == [legacy]
        reader = PostgresWalReader(pg_url, pg_ref)
        await reader.connect()
        try:
            assert reader.slot == legacy
        finally:
            await reader.close()
    finally:
        drop_slot(pg_url, pg_ref, legacy)


def test_relay_before_migrate_capture_wal_stops_with_one_line(pg_url: str, pg_ref: TableRef) -> None:
    args = ["relay", "--db", pg_url, "--schema", pg_ref.schema or "", "--broker", "nats://127.0.0.1:4222"]
    result = subprocess.run(
        [sys.executable, "-m", "outboxkit", *args, "--capture", "wal"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "does not exist" in line]
    assert len(lines) == 1 and "--resume-from-now" in lines[0], result.stderr


async def test_a_slot_dropped_under_a_running_relay_stops_it(
    pg_url: str, pg_ref: TableRef, nats_stream: Stream
) -> None:
    """Regression: the peek's "slot does not exist" was classed transient and retried forever."""
    name = migrate_wal(pg_url, pg_ref)
    relay = build_tail_relay(
        pg_url, nats_stream.url, ref=pg_ref, config=RelayConfig(poll_interval=0.05, lease_ttl=2.0, retry_cap=0.5)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.to_thread(emit_many, pg_url, pg_ref, nats_stream.topic("o"), [{"i": 1}])
        async with asyncio.timeout(30):
            while relay.stats.published < 1:
                await asyncio.sleep(0.05)

        def drop() -> None:
            # The slot is active while the relay reads it (always, for the streaming reader; during
            # a peek, for the SQL one): end the session reading it, and drop it before the relay's
            # next session takes it again.
            with psycopg.connect(pg_url, autocommit=True) as conn:
                while True:
                    conn.execute(
                        b"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                        b"WHERE slot_name = %s AND active_pid IS NOT NULL",
                        [name],
                    )
                    try:
                        conn.execute(b"SELECT pg_drop_replication_slot(%s)", [name])
                        return
                    except psycopg.errors.ObjectInUse:
                        continue

        await asyncio.to_thread(drop)
        with pytest.raises(PositionLostError, match="resume-from-now"):
            await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        drop_slot(pg_url, pg_ref, resolve_slot(pg_url, pg_ref))
