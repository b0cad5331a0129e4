"""``outboxkit migrate --event-store``, ``streams list|show``, ``projections status|rebuild`` as a
user runs them (a child process), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from outboxkit.eventstore import NO_STREAM, EventStore, NewEvent, ProjectionRunner
from tests.conftest import PG_URL, require, unique
from tests.integration.eventstore_support import Counts
from tests.integration.test_cli import one_line_error, run

ROOT = Path(__file__).resolve().parents[2]


def _rebuild_env() -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT)}


def test_event_store_commands_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/es.db"
    missing = run("streams", "list", "--db", url)
    assert "no event store" in one_line_error(missing) and "outboxkit migrate --event-store" in missing.stderr
    done = run("migrate", "--event-store", "--db", url)
    assert done.returncode == 0, done.stderr
    assert 'migrated event store "events"' in done.stderr
    printed = run("migrate", "--event-store", "--sql", "--dialect", "sqlite")
    assert printed.returncode == 0 and '"events_streams"' in printed.stdout and "stream_id" in printed.stdout

    store = EventStore()
    conn = sqlite3.connect(f"{tmp_path}/es.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    store.append(
        conn, "order-1", [NewEvent("OrderPlaced", {"total": 30}), NewEvent("OrderPaid", {})], expected=NO_STREAM
    )
    store.append(conn, "order-2", [NewEvent("OrderPlaced", {"total": 5})], expected=NO_STREAM)
    conn.execute("COMMIT")

    listed = run("streams", "list", "--db", url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["STREAM", "VERSION", "UPDATED"]
    assert [line.split()[:2] for line in lines[1:]] == [["order-1", "2"], ["order-2", "1"]]

    shown = run("streams", "show", "order-1", "--db", url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == "stream order-1: version 2"
    assert "OrderPlaced" in shown.stdout and '{"total":30}' in shown.stdout and "OrderPaid" in shown.stdout
    assert "no stream 'nobody'" in one_line_error(run("streams", "show", "nobody", "--db", url))

    counts = Counts("counts", "sqlite", None)
    counts.create(conn)
    runner = ProjectionRunner(store, counts, url)
    assert runner.catch_up() == 3
    runner.close()
    status = run("projections", "status", "--db", url)
    assert status.stdout.splitlines()[1].split()[:3] == ["counts", "3", "0"]

    conn.execute("UPDATE counts_counts SET events = 99")  # a projection gone wrong
    rebuilt = run(
        "projections", "rebuild", "--db", url,
        "--projection", "tests.integration.test_eventstore_cli:sqlite_counts", env=_rebuild_env(),
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt projection 'counts': 3 events" in rebuilt.stderr
    assert counts.state(conn) == {"order-1": (2, 2), "order-2": (1, 1)}
    conn.close()
    bad = run("projections", "rebuild", "--db", url, "--projection", "nope")
    assert "--projection must look like package.module:attribute" in one_line_error(bad) and bad.returncode == 2


def sqlite_counts() -> Counts:
    """The projection factory ``projections rebuild`` loads (--projection module:attr)."""
    return Counts("counts", "sqlite", None)


def test_event_store_commands_on_postgres() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    schema = unique("oke")
    try:
        done = run("migrate", "--event-store", "--db", PG_URL, "--schema", schema, "--table", "ledger")
        assert done.returncode == 0, done.stderr
        store = EventStore(table="ledger", schema=schema)
        with psycopg.connect(PG_URL) as conn, conn.transaction():
            store.append(conn, "acct-1", [NewEvent("Deposited", {"amount": 10})], expected=NO_STREAM)
        listed = run("streams", "list", "--db", PG_URL, "--schema", schema, "--table", "ledger")
        assert listed.stdout.splitlines()[1].split()[:2] == ["acct-1", "1"], listed.stderr
        shown = run("streams", "show", "acct-1", "--db", PG_URL, "--schema", schema, "--table", "ledger")
        assert "Deposited" in shown.stdout, shown.stderr
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def test_no_database_is_a_one_line_error() -> None:
    result = run("projections", "status")
    assert result.returncode == 2 and "no database" in one_line_error(result)
