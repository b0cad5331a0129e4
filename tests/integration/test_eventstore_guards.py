"""What protects an event store from the outbox's own tools: ``outboxkit cleanup`` refuses its
table (delivered events are history, not spent rows), and ``migrate --event-store`` on a table
first created as a plain outbox (SQLite) adds the stream columns instead of failing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from outboxkit import Outbox
from outboxkit.cli import app
from outboxkit.eventstore import NO_STREAM, EventStore, NewEvent
from tests.conftest import PG_URL, require, unique
from tests.integration.test_cli import one_line_error, run


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"OUTBOXKIT_DB": "", "OUTBOXKIT_CONFIG": ""})


def one_line_refusal(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_cleanup_refuses_an_event_store_table_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/es.db"
    assert cli("migrate", "--event-store", "--db", url).exit_code == 0
    assert cli("migrate", "--db", url).exit_code == 0  # a plain outbox beside it, in the same file
    conn = sqlite3.connect(f"{tmp_path}/es.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    EventStore().append(conn, "order-1", [NewEvent("OrderPlaced", {}), NewEvent("OrderPaid", {})], expected=NO_STREAM)
    Outbox().emit(conn, "orders", {"n": 1})
    conn.execute("COMMIT")
    # Delivered long ago: exactly what cleanup deletes from an outbox.
    for table in ("events", "outbox"):
        conn.execute(f"UPDATE {table} SET delivered_at = '2000-01-01T00:00:00.000Z'")

    for extra in ((), ("--dry-run",)):
        line = one_line_refusal(cli("cleanup", "--db", url, "--table", "events", "--older-than", "1d", *extra))
        assert "event store" in line and "stream_id" in line and "history" in line
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (2,)

    done = cli("cleanup", "--db", url, "--older-than", "1d")  # the outbox is cleaned as before
    assert done.exit_code == 0, done.stderr
    assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    conn.close()


def test_cleanup_refuses_an_event_store_table_on_postgres() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    schema = unique("okg")
    try:
        assert cli("migrate", "--event-store", "--db", PG_URL, "--schema", schema).exit_code == 0
        with psycopg.connect(PG_URL) as conn, conn.transaction():
            EventStore(schema=schema).append(conn, "acct-1", NewEvent("Deposited", {"n": 1}), expected=NO_STREAM)
            conn.execute(f"UPDATE \"{schema}\".events SET delivered_at = now() - interval '30 days'".encode())
        line = one_line_refusal(cli("cleanup", "--db", PG_URL, "--schema", schema, "--table", "events"))
        assert "event store" in line and "stream_id" in line
        with psycopg.connect(PG_URL) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{schema}".events'.encode()).fetchone() == (1,)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def test_migrate_event_store_upgrades_a_plain_outbox_table_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shop.db"
    assert cli("migrate", "--db", url, "--table", "events").exit_code == 0
    conn = sqlite3.connect(f"{tmp_path}/shop.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    old_id = Outbox(table="events").emit(conn, "orders", {"n": 1})  # a plain outbox row, before
    conn.execute("COMMIT")

    for _ in range(2):  # and again: idempotent
        done = cli("migrate", "--event-store", "--db", url)
        assert done.exit_code == 0, done.stderr
    store = EventStore()
    conn.execute("BEGIN IMMEDIATE")
    store.append(conn, "order-1", [NewEvent("OrderPlaced", {}), NewEvent("OrderPaid", {})], expected=NO_STREAM)
    conn.execute("COMMIT")
    assert [e.version for e in store.read_stream(conn, "order-1")] == [1, 2]
    # The outbox row is still there for the relay; readers of streams do not see it.
    assert [e.stream_id for e in store.read_all(conn)] == ["order-1", "order-1"]
    assert conn.execute("SELECT count(*) FROM events WHERE id = ?", (old_id,)).fetchone() == (1,)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.IntegrityError):  # the (stream_id, version) index exists
        conn.execute("INSERT INTO events (topic, payload, stream_id, version) VALUES ('t', x'00', 'order-1', 2)")
    conn.execute("ROLLBACK")

    conn.execute("CREATE TABLE ledger (a INTEGER)")
    conn.close()
    refused = run("migrate", "--event-store", "--db", url, "--table", "ledger")  # as a user runs it
    assert refused.returncode == 2
    assert "not an outbox table" in one_line_error(refused) and "--table" in refused.stderr


def test_migrate_event_store_upgrades_a_plain_outbox_table_on_postgres() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    schema = unique("okg")
    try:
        assert cli("migrate", "--db", PG_URL, "--schema", schema, "--table", "events").exit_code == 0
        done = cli("migrate", "--event-store", "--db", PG_URL, "--schema", schema)
        assert done.exit_code == 0, done.stderr
        store = EventStore(schema=schema)
        with psycopg.connect(PG_URL) as conn, conn.transaction():
            store.append(conn, "acct-1", [NewEvent("Opened", {}), NewEvent("Deposited", {"n": 1})], expected=NO_STREAM)
        with psycopg.connect(PG_URL) as conn:
            assert [e.version for e in store.read_stream(conn, "acct-1")] == [1, 2]
            conn.execute(f'CREATE TABLE "{schema}".ledger (a integer)'.encode())
            conn.commit()
        refused = run("migrate", "--event-store", "--db", PG_URL, "--schema", schema, "--table", "ledger")
        assert refused.returncode == 2
        assert "not an outbox table" in one_line_error(refused)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
