"""The inbox on a real NATS JetStream and real SQLite/PostgreSQL: duplicates skipped, retries,
dead letters, crash between commit and ack (G7)."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from outboxkit.brokers.base import Incoming
from outboxkit.brokers.nats import NatsConsumer, connect
from outboxkit.inbox import InboxRunner, cleanup_inbox, migrate_inbox
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import TableRef
from tests.conftest import PG_URL, Stream, require, unique
from tests.e2e_handler import record, record_async, setup_side_effects


@pytest.fixture(params=["sqlite", "postgres"])
def consumer_db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/consumer.db"
        ref = TableRef("inbox")
    else:
        require("PostgreSQL", "127.0.0.1", 5432)
        url, ref = PG_URL, TableRef("inbox", unique("oki"))
    migrate_inbox(url, ref)
    conn = connect_sync(url)
    if ref.schema:
        conn.execute(f'SET search_path TO "{ref.schema}"')
    setup_side_effects(conn)
    conn.close()
    yield url, ref
    if ref.schema:
        with psycopg.connect(PG_URL, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


def side_effects(url: str, ref: TableRef) -> list[str]:
    conn = connect_sync(url)
    try:
        if ref.schema:
            conn.execute(f'SET search_path TO "{ref.schema}"')
        return [r[0] for r in conn.execute("SELECT event_id FROM side_effects").fetchall()]
    finally:
        conn.close()


async def publish_raw(stream: Stream, topic: str, event_id: str, key: str, body: dict[str, Any]) -> None:
    """A copy on the bus, as the relay would send it, without JetStream's dedupe id, so that a
    duplicate really reaches the consumer (as after the dedupe window, or from another bus)."""
    nc = await connect(stream.url)
    try:
        headers = {"ce-id": event_id, "ce-subject": key, "ce-specversion": "1.0", "ce-type": topic}
        await nc.jetstream().publish(topic, json.dumps(body).encode(), headers=headers)
    finally:
        await nc.close()


def _handler_in(schema: str | None, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    if not schema:
        return fn
    if inspect.iscoroutinefunction(fn):

        async def scoped_async(conn: Any, event: Any) -> Any:
            conn.execute(f'SET LOCAL search_path TO "{schema}"')
            return await fn(conn, event)

        return scoped_async

    def scoped(conn: Any, event: Any) -> Any:
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        return fn(conn, event)

    return scoped


class _Runner:
    def __init__(self, runner: InboxRunner) -> None:
        self.runner, self.stop = runner, asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InboxRunner:
        self.task = asyncio.create_task(self.runner.run(self.stop))
        return self.runner

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def group(nats_stream: Stream) -> AsyncIterator[str]:
    name = unique("grp")
    yield name


@pytest.mark.parametrize("handler", [record, record_async], ids=["sync", "async"])
async def test_duplicates_are_acked_without_calling_the_handler(
    consumer_db: Any, nats_stream: Stream, group: str, handler: Callable[[Any, Any], Any]
) -> None:
    url, ref = consumer_db
    topic = nats_stream.topic("orders")
    ids = [str(uuid.uuid4()) for _ in range(5)]
    runner = InboxRunner(
        lambda: NatsConsumer(nats_stream.url, group=group, topics=[topic]),
        url,
        group,
        _handler_in(ref.schema, handler),
        ref=ref,
    )
    async with _Runner(runner) as r:
        for i, event_id in enumerate([*ids, *ids, ids[0]]):  # every event twice, the first three times
            await publish_raw(nats_stream, topic, event_id, f"k{i % 2}", {"i": i})
        await wait_for(lambda: r.stats.processed + r.stats.duplicates == 11)
    assert sorted(side_effects(url, ref)) == sorted(ids)
    assert r.stats.processed == 5 and r.stats.duplicates == 6


class _AckLost(NatsConsumer):
    """Fault injection on the real consumer: the first ack never reaches the broker, as if the
    process died between the database commit and the ack."""

    lost = 0

    async def ack(self, incoming: Incoming) -> None:
        if _AckLost.lost == 0:
            _AckLost.lost += 1
            return
        await super().ack(incoming)


async def test_crash_between_commit_and_ack_does_not_repeat_side_effects(
    consumer_db: Any, nats_stream: Stream, group: str
) -> None:
    url, ref = consumer_db
    topic = nats_stream.topic("orders")
    _AckLost.lost = 0
    runner = InboxRunner(
        lambda: _AckLost(nats_stream.url, group=group, topics=[topic], ack_wait=1.0),
        url,
        group,
        _handler_in(ref.schema, record),
        ref=ref,
    )
    event_id = str(uuid.uuid4())
    async with _Runner(runner) as r:
        await publish_raw(nats_stream, topic, event_id, "k", {"n": 1})
        await wait_for(lambda: r.stats.duplicates == 1, timeout=30)  # redelivered after ack_wait
    assert side_effects(url, ref) == [event_id]


async def test_failing_handler_is_retried_then_dead_lettered_without_blocking_others(
    consumer_db: Any, nats_stream: Stream, group: str
) -> None:
    url, ref = consumer_db
    topic = nats_stream.topic("orders")
    calls: dict[str, int] = {}
    poison, flaky, fine = (str(uuid.uuid4()) for _ in range(3))

    def handler(conn: Any, event: Any) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        record(conn, event)  # written, then rolled back when we raise
        if event.id == poison or (event.id == flaky and calls[event.id] < 2):
            raise ValueError(f"cannot handle {event.id}")

    runner = InboxRunner(
        lambda: NatsConsumer(nats_stream.url, group=group, topics=[topic]),
        url,
        group,
        _handler_in(ref.schema, handler),
        ref=ref,
        max_attempts=3,
        retry_base=0.05,
        retry_cap=0.2,
    )
    async with _Runner(runner) as r:
        for event_id, key in ((poison, "a"), (flaky, "b"), (fine, "c")):
            await publish_raw(nats_stream, topic, event_id, key, {})
        await wait_for(lambda: r.stats.dead_lettered == 1 and r.stats.processed == 2, timeout=30)
    assert sorted(side_effects(url, ref)) == sorted([flaky, fine])
    assert calls[poison] == 3 and calls[flaky] == 2 and calls[fine] == 1
    conn = connect_sync(url)
    try:
        dead = conn.execute(f"SELECT event_id, attempts, error FROM {ref.derived('dead')}").fetchall()
    finally:
        conn.close()
    assert [(d[0], d[1]) for d in dead] == [(poison, 3)]
    assert "ValueError: cannot handle" in dead[0][2]


async def test_retention_deletes_only_old_ids(consumer_db: Any) -> None:
    from datetime import timedelta

    url, ref = consumer_db
    conn = connect_sync(url)
    ph = "?" if url.startswith("sqlite") else "%s"
    old = "2000-01-01T00:00:00Z" if url.startswith("sqlite") else "2000-01-01 00:00:00+00"
    try:
        conn.execute(
            f"INSERT INTO {ref.qualified} (consumer, event_id, processed_at) VALUES ('c', 'old', {ph})", (old,)
        )
        conn.execute(f"INSERT INTO {ref.qualified} (consumer, event_id) VALUES ('c', 'new')")
    finally:
        conn.close()
    assert cleanup_inbox(url, ref, older_than=timedelta(days=7)) == 1
    conn = connect_sync(url)
    try:
        assert [r[0] for r in conn.execute(f"SELECT event_id FROM {ref.qualified}").fetchall()] == ["new"]
    finally:
        conn.close()


async def test_order_check_reports_a_key_arriving_out_of_order(
    consumer_db: Any, nats_stream: Stream, group: str
) -> None:
    url, ref = consumer_db
    topic = nats_stream.topic("orders")
    nc = await connect(nats_stream.url)
    try:
        for seq, key in ((1, "a"), (3, "a"), (2, "a"), (1, "b")):  # a's 2 arrives after its 3
            headers = {"ce-id": str(uuid.uuid4()), "ce-subject": key, "ce-sequence": f"{seq:020d}"}
            await nc.jetstream().publish(topic, b"{}", headers=headers)
    finally:
        await nc.close()
    runner = InboxRunner(
        lambda: NatsConsumer(nats_stream.url, group=group, topics=[topic]),
        url,
        group,
        _handler_in(ref.schema, record),
        ref=ref,
        check_order=True,
    )
    async with _Runner(runner) as r:
        await wait_for(lambda: r.stats.processed == 4)
    assert r.stats.out_of_order == 1
