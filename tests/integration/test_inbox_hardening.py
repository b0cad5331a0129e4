"""Hardening of the inbox (issue 8, item 7): an error at COMMIT is the handler's failure, not a
crash; a failing message holds its key (configurable skip); per-key memory is bounded."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from outboxkit.brokers.nats import NatsConsumer
from outboxkit.inbox import InboxRunner, migrate_inbox
from outboxkit.stores.base import TableRef
from tests.conftest import PG_URL, Stream, require, unique
from tests.integration.test_inbox import publish_raw


@pytest.fixture
def fk_db() -> Iterator[tuple[str, TableRef]]:
    """An inbox plus a child table whose foreign key is checked only at COMMIT."""
    require("PostgreSQL", "127.0.0.1", 5432)
    ref = TableRef("inbox", unique("okh"))
    migrate_inbox(PG_URL, ref)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{ref.schema}".parent (id int PRIMARY KEY)'.encode())
        conn.execute(
            f'CREATE TABLE "{ref.schema}".child (id serial, parent int REFERENCES "{ref.schema}".parent'
            " DEFERRABLE INITIALLY DEFERRED)".encode()
        )
        conn.execute(f'INSERT INTO "{ref.schema}".parent VALUES (1)'.encode())
    yield PG_URL, ref
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


async def _run(
    stream: Stream, db: str, ref: TableRef, calls: list[tuple[str, str]], *, hold: bool, until: Any
) -> InboxRunner:
    schema = ref.schema

    def handler(conn: Any, event: Any) -> None:
        calls.append((event.id, "call"))
        conn.execute(f'INSERT INTO "{schema}".child (parent) VALUES (%s)', [event.json()["parent"]])

    group = unique("okh")
    runner = InboxRunner(
        lambda: NatsConsumer(stream.url, group=group, topics=[f"{stream.prefix}.>"]),
        db,
        group,
        handler,
        ref=ref,
        max_attempts=3,
        retry_base=0.05,
        retry_cap=0.2,
        hold_failed_keys=hold,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not until(runner):
            assert not task.done(), f"the consumer stopped: {task.exception() if task.done() else ''}"
            await asyncio.sleep(0.05)
        assert until(runner), f"not reached: {runner.stats}"
        assert not task.done(), "the consumer is still running"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return runner


@pytest.mark.parametrize("hold", [True, False], ids=["hold-key", "skip-key"])
async def test_item7_an_error_at_commit_is_a_handler_failure_and_holds_its_key(
    fk_db: tuple[str, TableRef], nats_stream: Stream, hold: bool
) -> None:
    db, ref = fk_db
    bad, later, other = (str(uuid.uuid4()) for _ in range(3))
    topic = nats_stream.topic("orders")
    await publish_raw(nats_stream, topic, bad, "k", {"parent": 999})  # fails at COMMIT, every time
    await publish_raw(nats_stream, topic, later, "k", {"parent": 1})
    await publish_raw(nats_stream, topic, other, "o", {"parent": 1})
    calls: list[tuple[str, str]] = []
    runner = await _run(
        nats_stream, db, ref, calls, hold=hold, until=lambda r: r.stats.dead_lettered == 1 and r.stats.processed == 2
    )
    order = [event_id for event_id, _ in calls]
    assert order.count(bad) == 3, "three attempts, then a dead letter"
    if hold:
        last_bad = max(i for i, e in enumerate(order) if e == bad)
        assert order.index(later) > last_bad, "the key's later message waited for the failing one"
        assert runner.stats.held >= 1
    else:
        assert order.index(later) < max(i for i, e in enumerate(order) if e == bad), "skip: the key flows"
    with psycopg.connect(db, autocommit=True) as conn:
        dead = conn.execute(f"SELECT event_id, error, attempts FROM {ref.derived('dead')}".encode()).fetchall()
        children = conn.execute(f'SELECT count(*) FROM "{ref.schema}".child'.encode()).fetchone()
    assert [d[0] for d in dead] == [bad] and "COMMIT failed" in dead[0][1] and "ForeignKeyViolation" in dead[0][1]
    assert dead[0][2] == 3
    assert children == (2,), "side effects of the two good messages only"


def test_item7_per_key_memory_is_bounded() -> None:
    runner = InboxRunner(lambda: None, "sqlite:///unused.db", "g", lambda c, e: None, memory=100)  # type: ignore[arg-type,return-value]
    for i in range(10_000):
        runner._last_sequence[f"key-{i}"] = i
        runner._failures[f"id-{i}"] = 1
        runner._held[f"key-{i}"] = f"id-{i}"
    assert len(runner._last_sequence) == len(runner._failures) == len(runner._held) == 100
    assert "key-9999" in runner._last_sequence and "key-0" not in runner._last_sequence


async def test_issue20_handler_failure_log_lines_carry_the_exception(
    nats_stream: Stream, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning of each failed attempt and the dead-letter error say what was raised (type and
    message); the traceback is an info record (``-v``/``--debug``), not part of the warning."""
    db = f"sqlite:///{tmp_path}/consumer.db"
    migrate_inbox(db, TableRef("inbox"))

    def charge_customer(conn: Any, event: Any) -> None:
        raise ValueError(f"order {event.json()['order']} has no customer")

    group, topic = unique("okh"), nats_stream.topic("orders")
    runner = InboxRunner(
        lambda: NatsConsumer(nats_stream.url, group=group, topics=[topic]),
        db,
        group,
        charge_customer,
        max_attempts=2,
        retry_base=0.05,
        retry_cap=0.2,
    )
    caplog.set_level(logging.INFO, "outboxkit.inbox")
    await publish_raw(nats_stream, topic, str(uuid.uuid4()), "k", {"order": 7})
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        deadline = time.monotonic() + 60
        while runner.stats.dead_lettered < 1 and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    records = [r for r in caplog.records if r.name == "outboxkit.inbox"]
    (warning,) = [r.getMessage() for r in records if r.getMessage().startswith("handler failed")]
    (error,) = [r.getMessage() for r in records if r.getMessage().startswith("dead-lettered")]
    tracebacks = [r.getMessage() for r in records if r.levelno == logging.INFO and "Traceback" in r.getMessage()]
    assert warning.endswith("ValueError: order 7 has no customer") and "\n" not in warning
    assert error.endswith("ValueError: order 7 has no customer")
    assert len(tracebacks) == 1 and "charge_customer" in tracebacks[0]
