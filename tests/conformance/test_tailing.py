"""Every log capture against the tail-reader conformance suite (outboxkit.testing.tailing), on the
real databases and NATS; SQLite, which has no log to tail, says so in one line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.brokers.base import Delivered
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import log_capture_for
from outboxkit.testing.conformance import NotSupported
from outboxkit.testing.tailing import TAIL_CHECKS
from outboxkit.walemit import MessageOutbox
from tests.conftest import Stream, drop_stream, make_stream, unique
from tests.helpers import db_connect, read_all
from tests.integration.tailsupport import binlog_now, binlog_stored, confirmed_lsn, tail_pg_db, wal_lsn

__all__ = ["tail_pg_db"]  # a fixture used by name

tail_check = pytest.mark.parametrize("check", TAIL_CHECKS, ids=[c.__name__.removeprefix("check_") for c in TAIL_CHECKS])


@dataclass
class Harness:
    url: str
    ref: TableRef
    capture: str
    broker: str
    stream: Stream
    foreign_traffic: Callable[[], None]
    head_position: Callable[[], Any]
    saved_position: Callable[[], Any]

    def topic(self, name: str = "events") -> str:
        return self.stream.topic(name)

    async def read(self, expect: int, timeout: float = 30.0) -> list[Delivered]:
        return await read_all(self.stream.url, self.stream.name, expect=expect, timeout=timeout)

    def foreign(self) -> None:
        self.foreign_traffic()

    def head(self) -> Any:
        return self.head_position()

    def saved(self) -> Any:
        return self.saved_position()


def _pg_foreign(db: str, ref: TableRef) -> None:
    """Rows of another table, another tool's messages (non-transactional, in bulk, and in a
    transaction), and another outbox's table-less event: every slot of the database sees them."""
    with psycopg.connect(db, autocommit=True) as conn:
        busy = f'"{ref.schema}".busy'
        conn.execute(f"CREATE TABLE IF NOT EXISTS {busy} (id bigint GENERATED ALWAYS AS IDENTITY, pad text)".encode())
        for _ in range(5):
            conn.execute(f"INSERT INTO {busy} (pad) SELECT repeat('x', 200) FROM generate_series(1, 200)".encode())
        conn.execute(b"SELECT pg_logical_emit_message(false, 'other-prefix', 'beat') FROM generate_series(1, 2000)")
        with conn.transaction():
            conn.execute(b"SELECT pg_logical_emit_message(true, 'other-prefix', 'in a transaction')")
            MessageOutbox(table=ref.table, schema=f"{ref.schema}_other").emit(conn, "other.events", {}, key="k")


@pytest.fixture
async def wal_harness(tail_pg_db: str, nats_url: str) -> AsyncIterator[Harness]:
    """An outbox with its slot in the module's own database (logical messages reach every slot of
    a database), a stream of its own; the slot and the schema go after."""
    db, ref = tail_pg_db, TableRef("outbox", unique("okc"))
    migrate(db, ref)
    capture = log_capture_for(db, "wal")
    capture.migrate(db, ref)
    stream = await make_stream(nats_url)
    try:
        yield Harness(
            db,
            ref,
            "wal",
            stream.url,
            stream,
            lambda: _pg_foreign(db, ref),
            lambda: wal_lsn(db),
            lambda: confirmed_lsn(db, ref),
        )
    finally:
        await drop_stream(stream)
        capture.drop(db, ref)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


def _mariadb_foreign(db: str, ref: TableRef, other_db: str) -> None:
    """Rows of another table of the outbox's database and of a table named like the outbox in
    another database (rows that would be dead letters if they were read as ours)."""
    conn = db_connect(db)
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS `{ref.schema}`.`other` (id BIGINT AUTO_INCREMENT PRIMARY KEY, pad TEXT)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS `{other_db}`.`{ref.table}` (seq BIGINT AUTO_INCREMENT PRIMARY KEY, topic TEXT)"
        )
        for _ in range(10):
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO `{ref.schema}`.`other` (pad) SELECT REPEAT('x', 200) FROM seq_1_to_100")
            conn.execute(f"INSERT INTO `{other_db}`.`{ref.table}` (topic) SELECT 'bad topic!' FROM seq_1_to_100")
            conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture
async def binlog_harness(mariadb_url: str, mariadb_ref: TableRef, nats_url: str) -> AsyncIterator[Harness]:
    """The test's MariaDB outbox (in a database of its own) with its binlog position table, another
    database for foreign traffic, a stream of its own."""
    db, ref, other_db = mariadb_url, mariadb_ref, unique("okc_other")
    log_capture_for(db, "binlog").migrate(db, ref)
    conn = db_connect(db)
    try:
        conn.execute(f"CREATE DATABASE `{other_db}`")
    finally:
        conn.close()
    stream = await make_stream(nats_url)
    try:
        yield Harness(
            db,
            ref,
            "binlog",
            stream.url,
            stream,
            lambda: _mariadb_foreign(db, ref, other_db),
            lambda: binlog_now(db),
            lambda: binlog_stored(db, ref),
        )
    finally:
        await drop_stream(stream)
        conn = db_connect(db)
        try:
            conn.execute(f"DROP DATABASE IF EXISTS `{other_db}`")
        finally:
            conn.close()


async def _run(check: object, harness: Harness) -> None:
    try:
        await check(harness)  # type: ignore[operator]
    except NotSupported as exc:
        pytest.skip(f"not applicable: {exc}")


@tail_check
async def test_wal(check: object, wal_harness: Harness) -> None:
    await _run(check, wal_harness)


@tail_check
@pytest.mark.xdist_group("binlog")  # every reader of the shared binlog in one group (test_binlog.py)
async def test_binlog(check: object, binlog_harness: Harness) -> None:
    await _run(check, binlog_harness)


@pytest.mark.parametrize("capture", ["wal", "binlog", None])
def test_sqlite_has_no_log_to_tail(capture: str | None) -> None:
    """One line naming the databases that have the log (the CLI prints it, exit 2)."""
    with pytest.raises(ConfigurationError) as refused:
        log_capture_for("sqlite:///outbox.db", capture)
    text = str(refused.value)
    assert "\n" not in text and "sqlite has no log a relay can tail" in text
    assert "PostgreSQL" in text if capture != "binlog" else "MariaDB or MySQL" in text
