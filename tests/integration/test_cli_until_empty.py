"""``outboxkit relay --until-empty`` as a CI job runs it: exit 0 once every pending row is confirmed
and marked; exit 1 with one line when it cannot be (rows held behind a dead key, a topic nothing
takes until --timeout, a row dead-lettered during the run). SQLite outbox, the shared NATS."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxkit import Outbox, migrate
from outboxkit.stores.base import TableRef
from tests.conftest import Stream, drop_stream, make_stream, require
from tests.helpers import read_all
from tests.integration.test_cli import one_line_error, run


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    require("NATS", "127.0.0.1", 4222)
    made = await make_stream("nats://127.0.0.1:4222")
    yield made
    await drop_stream(made)


def emit(
    db: Path, *events: tuple[str, str | None, bytes | dict[str, object]], outbox: Outbox | None = None
) -> list[str]:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        ids = [(outbox or Outbox()).emit(conn, topic, payload, key=key) for topic, key, payload in events]
        conn.execute("COMMIT")
        return ids
    finally:
        conn.close()


def rows(db: Path) -> list[tuple[str, bool, bool]]:
    conn = sqlite3.connect(db)
    try:
        found = conn.execute("SELECT id, delivered_at IS NOT NULL, dead_at IS NOT NULL FROM outbox ORDER BY seq")
        return [(str(r[0]), bool(r[1]), bool(r[2])) for r in found]
    finally:
        conn.close()


def relay(db: Path, stream: Stream, *extra: str) -> list[str]:
    return ["relay", "--db", f"sqlite:///{db}", "--broker", stream.url, "--until-empty", *extra]


async def test_publishes_what_is_pending_then_exits_0(tmp_path: Path, stream: Stream) -> None:
    db = tmp_path / "app.db"
    migrate(f"sqlite:///{db}")
    ids = emit(db, *[(stream.topic("orders"), f"k{i % 3}", {"n": i}) for i in range(40)])
    result = await asyncio.to_thread(run, *relay(db, stream), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "40 published, the outbox has nothing pending" in result.stderr
    # Every row was confirmed and marked before the exit, and is on the stream.
    assert rows(db) == [(i, True, False) for i in ids]
    got = await read_all(stream.url, stream.name, expect=40, idle=0.2)
    assert sorted(m.event_id for m in got) == sorted(ids)
    # Nothing pending: exit 0 at once.
    again = await asyncio.to_thread(run, *relay(db, stream), timeout=120)
    assert again.returncode == 0 and "0 published" in again.stderr, again.stderr


async def test_rows_held_behind_a_dead_key_are_a_one_line_failure(tmp_path: Path, stream: Stream) -> None:
    db = tmp_path / "app.db"
    migrate(f"sqlite:///{db}")
    dead, held = emit(db, (stream.topic(), "k", {"n": 1}), (stream.topic(), "k", {"n": 2}))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE outbox SET dead_at = CURRENT_TIMESTAMP, last_error = 'refused' WHERE id = ?", (dead,))
    conn.close()
    free = emit(db, (stream.topic(), "other", {"n": 3}))[0]
    result = await asyncio.to_thread(run, *relay(db, stream, "--timeout", "120"), timeout=180)
    assert result.returncode == 1
    assert "1 pending row(s) are held behind dead keys" in one_line_error(result)
    assert rows(db) == [(dead, False, True), (held, False, False), (free, True, False)]


async def test_a_topic_nothing_takes_fails_after_the_timeout(tmp_path: Path, stream: Stream) -> None:
    db = tmp_path / "app.db"
    migrate(f"sqlite:///{db}")
    emit(db, (f"{stream.prefix}_nowhere.orders", None, {"n": 1}))  # no stream captures it
    result = await asyncio.to_thread(run, *relay(db, stream, "--timeout", "2"), timeout=120)
    assert result.returncode == 1
    # The relay logs why (no stream captures the subject); the last line is the verdict.
    assert "no JetStream stream captures subject" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 row(s) still pending after 2 s"), result.stderr


async def test_a_row_dead_lettered_during_the_run_fails_it(tmp_path: Path, stream: Stream) -> None:
    db = tmp_path / "app.db"
    migrate(f"sqlite:///{db}")
    # Over NATS's max_payload (1 MiB by default): refused for good, a dead letter at once.
    big = Outbox(max_payload=3_000_000)  # emit's own check would refuse it first, as it should
    too_big, fine = emit(db, (stream.topic(), "a", b"x" * 2_000_000), (stream.topic(), "b", {"n": 1}), outbox=big)
    result = await asyncio.to_thread(run, *relay(db, stream), timeout=120)
    assert result.returncode == 1
    assert "exceeds the NATS server's max_payload" in result.stderr  # the relay's own log line
    assert result.stderr.strip().splitlines()[-1].startswith("error: 1 row(s) were dead-lettered instead of published")
    assert rows(db) == [(too_big, False, True), (fine, True, False)]


def test_until_empty_refuses_what_it_cannot_drain(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/app.db"
    pg = "postgresql://postgres@127.0.0.1:5432/test"
    for url, extra in ((db, ["--workers", "2"]), (db, ["--http-port", "9464"]), (pg, ["--capture", "wal"])):
        result = run("relay", "--db", url, "--broker", "nats://127.0.0.1:4222", "--until-empty", *extra)
        assert result.returncode == 2 and "--until-empty runs one table relay" in one_line_error(result)


async def test_on_postgresql_with_leases(pg_url: str, pg_ref: TableRef, stream: Stream) -> None:
    """The leased relay (PostgreSQL) drains too: it takes its buckets, publishes, exits 0."""
    import psycopg

    with psycopg.connect(pg_url) as conn, conn.transaction():
        outbox = Outbox(schema=pg_ref.schema)
        ids = [outbox.emit(conn, stream.topic("orders"), {"n": i}, key=f"k{i % 5}") for i in range(30)]
    args = ["relay", "--db", pg_url, "--schema", pg_ref.schema or "", "--broker", stream.url, "--until-empty"]
    result = await asyncio.to_thread(run, *args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "30 published, the outbox has nothing pending" in result.stderr
    with psycopg.connect(pg_url) as conn:
        marked = conn.execute(
            f'SELECT count(*) FROM "{pg_ref.schema}".outbox WHERE delivered_at IS NOT NULL'.encode()
        ).fetchone()
    assert marked == (len(ids),)
