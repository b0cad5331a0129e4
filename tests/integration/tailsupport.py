"""Shared harness of the log-tailing poison tests (regressions and the fuzz test).

The PostgreSQL side runs in a database of its own: logical messages reach every slot of their
database, and a flood of them must not reach the slots of the rest of the suite (or of another
run's relays on the shared server). Slots are dropped in teardown, then the database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.core.walmessage import prefix_for
from outboxkit.relay.tail import TailRelay
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.pgoutput import parse_lsn
from outboxkit.stores.postgres.wal import resolve_slot
from outboxkit.stores.registry import log_capture_for
from outboxkit.testing.tailing import TIMEOUT, relay_until, tail_relay
from tests.conftest import unique

__all__ = ["TIMEOUT", "relay_until"]  # the shared harness, from the tail-reader conformance suite


@pytest.fixture(scope="module")
def tail_pg_db() -> Iterator[str]:
    """A database of this module's own (see the module docstring), dropped with its slots."""
    from tests.conftest import PG_URL, require

    require("PostgreSQL", "127.0.0.1", 5432)
    name = unique("okt_tail")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        # Only slots of this database: every one of them was made by this module.
        for (slot,) in conn.execute(
            b"SELECT slot_name FROM pg_replication_slots WHERE database = %s AND active_pid IS NULL", [name]
        ).fetchall():
            conn.execute(b"SELECT pg_drop_replication_slot(%s)", [slot])
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def tail_wal_ref(tail_pg_db: str) -> Iterator[TableRef]:
    """An outbox in a schema of its own, with its publication and slot (dropped after the test)."""
    ref = TableRef("outbox", unique("okt"))
    migrate(tail_pg_db, ref)
    log_capture_for(tail_pg_db, "wal").migrate(tail_pg_db, ref)
    yield ref
    log_capture_for(tail_pg_db, "wal").drop(tail_pg_db, ref)
    with psycopg.connect(tail_pg_db, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


def wal_relay(db: str, broker: str, ref: TableRef, **config: object) -> TailRelay:
    return tail_relay(db, broker, ref, "wal", **config)


def binlog_relay(db: str, broker: str, ref: TableRef, **config: object) -> TailRelay:
    return tail_relay(db, broker, ref, "binlog", **config)


def emit_message(
    conn: Any, ref: TableRef, content: bytes, *, transactional: bool = True, prefix: str | None = None
) -> None:
    """One logical message, by plain SQL (another program's way of writing)."""
    conn.execute(
        b"SELECT pg_logical_emit_message(%s, %s, %s::bytea)",
        [transactional, prefix or prefix_for(ref.table, ref.schema), content],
    )


def good_content(topic: str, key: str | None = None) -> tuple[str, bytes]:
    """A valid table-less event: its id and its message content."""
    from outboxkit.core import walmessage

    event_id = str(uuid.uuid4())
    return event_id, walmessage.encode(id=event_id, topic=topic, payload=b'{"ok":1}', key=key)


def wal_lsn(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(b"SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def confirmed_lsn(db: str, ref: TableRef) -> int:
    """The slot's confirmed position, read without peeking (``slot_info`` peeks for the lag, and a
    peek while the relay reads the slot makes the relay's next read fail: "slot is active")."""
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(
            b"SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", [resolve_slot(db, ref)]
        ).fetchone()
    assert row is not None
    return parse_lsn(row[0])


def dead_letters(db: str, ref: TableRef) -> list[tuple[str | None, str]]:
    """(key, last_error) of every dead letter, in seq order."""
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT key, last_error FROM {ref.qualified} WHERE dead_at IS NOT NULL ORDER BY seq".encode()
        )
        return [(r[0], r[1]) for r in rows.fetchall()]


@pytest.fixture
def tail_binlog_ref(mariadb_url: str, mariadb_ref: TableRef) -> TableRef:
    """The test's MariaDB outbox with its binlog position table (dropped with its database)."""
    log_capture_for(mariadb_url, "binlog").migrate(mariadb_url, mariadb_ref)
    return mariadb_ref


def binlog_now(db: str) -> tuple[str, int]:
    """The server's binlog position now (file, offset)."""
    from tests.helpers import db_connect

    conn = db_connect(db)
    try:
        row = conn.execute("SHOW MASTER STATUS").fetchone()
    finally:
        conn.close()
    return str(row[0]), int(row[1])


def binlog_stored(db: str, ref: TableRef) -> tuple[str, int]:
    """The position the binlog relay saved (file, offset)."""
    from outboxkit.stores.mariadb.binlogpos import position_table
    from tests.helpers import db_connect

    conn = db_connect(db)
    try:
        row = conn.execute(f"SELECT log_file, log_pos FROM {position_table(ref)}").fetchone()
    finally:
        conn.close()
    return str(row[0]), int(row[1])
