"""H14: a handler that ends the inbox's transaction (its own COMMIT or ROLLBACK, DDL that commits
implicitly on MariaDB) is a failed attempt, never a processed or a duplicate message. Real NATS
consumer, real PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from outboxkit.brokers.nats import NatsConsumer
from outboxkit.inbox import InboxRunner, migrate_inbox
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb import DATABASE as MARIADB
from tests.conftest import MARIADB_URL, PG_URL, Stream, require, unique
from tests.integration.test_inbox import _Runner, publish_raw, wait_for


class Db:
    """One consumer database: where the side effects go and how a handler ends its transaction."""

    def __init__(self, kind: str, url: str, ref: TableRef, table: str) -> None:
        self.kind, self.url, self.ref = kind, url, ref
        ph = "?" if kind == "sqlite" else "%s"
        self.insert = f"INSERT INTO {table} (event_id) VALUES ({ph})"
        self.select = f"SELECT event_id FROM {table}"
        self.dead = ref.derived("dead", "`" if kind == "mariadb" else '"')

    def end_transaction(self, conn: Any) -> None:
        if self.kind == "mariadb":
            # Any DDL commits implicitly, even one that changes nothing.
            conn.execute(f"CREATE TABLE IF NOT EXISTS `{self.ref.schema}`.side_effects (event_id varchar(64))")
        elif self.kind == "sqlite":
            conn.commit()
        else:
            conn.execute("COMMIT")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = connect_sync(self.url)
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    kind = request.param
    if kind == "sqlite":
        url, ref = f"sqlite:///{tmp_path}/consumer.db", TableRef("inbox")
    elif kind == "postgres":
        require("PostgreSQL", "127.0.0.1", 5432)
        url, ref = PG_URL, TableRef("inbox", unique("oki"))
    else:
        require("MariaDB", "127.0.0.1", 3306)
        url, ref = MARIADB_URL, TableRef("inbox", unique("oki"))
    migrate_inbox(url, ref)
    table = {"sqlite": "side_effects", "postgres": f'"{ref.schema}".side_effects'}.get(
        kind, f"`{ref.schema}`.side_effects"
    )
    conn = connect_sync(url)
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (event_id varchar(64) NOT NULL)")
    finally:
        conn.close()
    yield Db(kind, url, ref, table)
    if kind == "postgres":
        with psycopg.connect(PG_URL, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())
    elif kind == "mariadb":
        conn = MARIADB.connect(MARIADB_URL)
        try:
            MARIADB.drop_namespace(conn, ref.schema or "")
        finally:
            conn.close()


def _runner(db: Db, stream: Stream, handler: Callable[[Any, Any], None]) -> tuple[str, InboxRunner]:
    topic, group = stream.topic("orders"), unique("grp")
    return topic, InboxRunner(
        lambda: NatsConsumer(stream.url, group=group, topics=[topic]),
        db.url,
        group,
        handler,
        ref=db.ref,
        max_attempts=3,
        retry_base=0.05,
        retry_cap=0.2,
    )


async def test_h14_a_handler_that_ended_the_transaction_and_raised_is_retried_not_a_duplicate(
    db: Db, nats_stream: Stream
) -> None:
    """The first attempt ends the transaction (committing the inbox's claim on old code) and fails;
    the retry must run the handler again instead of finding the claim and counting a duplicate."""
    calls: dict[str, int] = {}

    def handler(conn: Any, event: Any) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        if calls[event.id] == 1:
            db.end_transaction(conn)
            raise RuntimeError("failed after ending the transaction")
        conn.execute(db.insert, (event.id,))

    topic, runner = _runner(db, nats_stream, handler)
    event_id = str(uuid.uuid4())
    async with _Runner(runner) as r:
        await publish_raw(nats_stream, topic, event_id, "k", {})
        await wait_for(lambda: r.stats.processed + r.stats.duplicates + r.stats.dead_lettered >= 1, timeout=30)
    assert (r.stats.processed, r.stats.duplicates, r.stats.dead_lettered) == (1, 0, 0)
    assert calls[event_id] == 2
    assert db.rows(db.select) == [(event_id,)]


async def test_h14_a_handler_that_ended_the_transaction_fails_with_the_reason_and_is_dead_lettered(
    db: Db, nats_stream: Stream, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that ends the transaction and returns normally did work that was not atomic with
    the inbox record: every attempt fails, the last one is a dead letter saying why."""

    def handler(conn: Any, event: Any) -> None:
        db.end_transaction(conn)
        conn.execute(db.insert, (event.id,))

    topic, runner = _runner(db, nats_stream, handler)
    event_id = str(uuid.uuid4())
    caplog.set_level(logging.WARNING, "outboxkit.inbox")
    async with _Runner(runner) as r:
        await publish_raw(nats_stream, topic, event_id, "k", {})
        await wait_for(lambda: r.stats.processed + r.stats.duplicates + r.stats.dead_lettered >= 1, timeout=30)
    assert (r.stats.processed, r.stats.duplicates, r.stats.dead_lettered, r.stats.failed) == (0, 0, 1, 3)
    ((dead_id, attempts, error),) = db.rows(f"SELECT event_id, attempts, error FROM {db.dead}")
    assert (dead_id, attempts) == (event_id, 3)
    assert "ended the inbox's transaction" in error
    assert "ended the inbox's transaction" in caplog.text


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_h14_a_handler_that_swallowed_an_error_in_an_aborted_postgres_transaction_is_not_processed(
    db: Db, nats_stream: Stream
) -> None:
    """PostgreSQL aborts the transaction on an error; a handler that catches it and returns leaves
    an aborted transaction, whose COMMIT silently rolls back (the inbox row too). That must be a
    failed attempt, not "processed" with nothing recorded."""

    def handler(conn: Any, event: Any) -> None:
        conn.execute(db.insert, (event.id,))
        with contextlib.suppress(Exception):  # the handler's mistake under test
            conn.execute("SELECT 1 / 0")

    topic, runner = _runner(db, nats_stream, handler)
    event_id = str(uuid.uuid4())
    async with _Runner(runner) as r:
        await publish_raw(nats_stream, topic, event_id, "k", {})
        await wait_for(lambda: r.stats.processed + r.stats.duplicates + r.stats.dead_lettered >= 1, timeout=30)
    assert (r.stats.processed, r.stats.dead_lettered) == (0, 1)
    ((error,),) = db.rows(f"SELECT error FROM {db.dead}")
    assert "ended the inbox's transaction" in error and "aborted" in error


async def test_an_event_id_the_inbox_table_cannot_keep_whole_is_parked_not_truncated(
    db: Db, nats_stream: Stream
) -> None:
    """Two events whose ids share their first 64 characters, on MariaDB's VARCHAR(64), were one
    id after INSERT IGNORE cut them: the second a "duplicate". An id longer than the table keeps
    (64 on MariaDB, 255 elsewhere), or one with a control character, is parked with the reason."""
    calls: list[str] = []

    def handler(conn: Any, event: Any) -> None:
        calls.append(event.id)
        conn.execute(db.insert, (event.id[:64],))

    topic, runner = _runner(db, nats_stream, handler)
    limit = 64 if db.kind == "mariadb" else 255
    prefix = "x" * limit
    fine, long_a, long_b, control = prefix, prefix + "-a", prefix + "-b", "order\t7"
    async with _Runner(runner) as r:
        for event_id in (fine, long_a, long_b, control):
            await publish_raw(nats_stream, topic, event_id, "k", {})
        await wait_for(lambda: r.stats.processed + r.stats.duplicates + r.stats.dead_lettered >= 4, timeout=30)
    assert calls == [fine]
    assert (r.stats.processed, r.stats.duplicates, r.stats.unidentified) == (1, 0, 3)
    errors = sorted(e for (e,) in db.rows(f"SELECT error FROM {db.dead}"))
    assert sum(f"keeps at most {limit}" in e for e in errors) == 2
    assert sum("control characters" in e for e in errors) == 1


def test_h13_a_message_whose_text_no_column_takes_is_still_parked_and_dead_lettered(db: Db) -> None:
    """H13 on the consumer: a topic, key or header holding a lone surrogate or NUL (a bus hands the
    consumer whatever a producer wrote) must not make parking or dead-lettering fail — that would
    leave the message to come back and fail again forever."""
    from outboxkit.inbox.runner import Event
    from outboxkit.inbox.transaction import InboxTransactions

    hostile = "a\ud800b\x00c"
    event = Event(
        id="e-1", topic=f"t.{hostile}", key=hostile, payload=b"{}", headers={hostile: hostile, "h": hostile}, attempt=1
    )
    tx = InboxTransactions(db.url, "g", db.ref)
    try:
        parked = tx.park(event, f"no event id: {hostile}")
        tx.dead_letter(event, f"handler failed: {hostile}", 3)
    finally:
        tx.drop()
    conn = connect_sync(db.url)
    try:
        name = f"{db.ref.table}_dead"
        dead = {"sqlite": name, "postgres": f'"{db.ref.schema}".{name}'}.get(db.kind, f"`{db.ref.schema}`.`{name}`")
        rows = conn.execute(f"SELECT event_id FROM {dead} ORDER BY event_id").fetchall()
    finally:
        conn.close()
    assert sorted(r[0] for r in rows) == sorted(["e-1", parked])
