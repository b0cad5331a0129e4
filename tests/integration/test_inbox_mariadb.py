"""The inbox on MariaDB (real server) and NATS: duplicates skipped, a crash between commit and ack,
a failing handler rolled back (side effects and inbox row together) then dead-lettered, retention."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from outboxkit.brokers.nats import NatsConsumer
from outboxkit.cli import app
from outboxkit.inbox import InboxRunner, cleanup_inbox
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb import DATABASE
from tests.conftest import MARIADB_URL, Stream, require, unique
from tests.integration.test_inbox import _AckLost, _Runner, publish_raw, wait_for


@pytest.fixture
def maria_inbox() -> Iterator[tuple[str, TableRef]]:
    """Inbox tables created by the CLI (``migrate --inbox``) in a database of their own."""
    from typer.testing import CliRunner

    require("MariaDB", "127.0.0.1", 3306)
    ref = TableRef("inbox", unique("oki"))
    result = CliRunner().invoke(app, ["migrate", "--inbox", "--db", MARIADB_URL, "--schema", ref.schema or ""])
    assert result.exit_code == 0, result.output
    conn = connect_sync(MARIADB_URL)
    try:
        conn.execute(f"CREATE TABLE `{ref.schema}`.side_effects (event_id varchar(64) NOT NULL, `key` text)")
    finally:
        conn.close()
    yield MARIADB_URL, ref
    conn = DATABASE.connect(MARIADB_URL)
    try:
        DATABASE.drop_namespace(conn, ref.schema or "")
    finally:
        conn.close()


def _record(schema: str) -> Any:
    def record(conn: Any, event: Any) -> None:
        # conn is outboxkit's PyMySQL wrapper: execute(sql, params) with %s placeholders.
        conn.execute(f"INSERT INTO `{schema}`.side_effects (event_id, `key`) VALUES (%s, %s)", (event.id, event.key))

    return record


def _side_effects(url: str, ref: TableRef) -> list[str]:
    conn = connect_sync(url)
    try:
        return [str(r[0]) for r in conn.execute(f"SELECT event_id FROM `{ref.schema}`.side_effects").fetchall()]
    finally:
        conn.close()


async def test_duplicates_are_acked_without_calling_the_handler(
    maria_inbox: tuple[str, TableRef], nats_stream: Stream
) -> None:
    url, ref = maria_inbox
    topic, group = nats_stream.topic("orders"), unique("grp")
    ids = [str(uuid.uuid4()) for _ in range(5)]
    runner = InboxRunner(
        lambda: NatsConsumer(nats_stream.url, group=group, topics=[topic]),
        url,
        group,
        _record(ref.schema or ""),
        ref=ref,
    )
    async with _Runner(runner) as r:
        for i, event_id in enumerate([*ids, *ids, ids[0]]):
            await publish_raw(nats_stream, topic, event_id, f"k{i % 2}", {"i": i})
        await wait_for(lambda: r.stats.processed + r.stats.duplicates == 11)
    assert sorted(_side_effects(url, ref)) == sorted(ids)
    assert r.stats.processed == 5 and r.stats.duplicates == 6


async def test_crash_between_commit_and_ack_does_not_repeat_side_effects(
    maria_inbox: tuple[str, TableRef], nats_stream: Stream
) -> None:
    url, ref = maria_inbox
    topic, group = nats_stream.topic("orders"), unique("grp")
    _AckLost.lost = 0
    runner = InboxRunner(
        lambda: _AckLost(nats_stream.url, group=group, topics=[topic], ack_wait=1.0),
        url,
        group,
        _record(ref.schema or ""),
        ref=ref,
    )
    event_id = str(uuid.uuid4())
    async with _Runner(runner) as r:
        await publish_raw(nats_stream, topic, event_id, "k", {"n": 1})
        await wait_for(lambda: r.stats.duplicates == 1, timeout=30)
    assert _side_effects(url, ref) == [event_id]


async def test_failing_handler_rolls_back_then_dead_letters(
    maria_inbox: tuple[str, TableRef], nats_stream: Stream
) -> None:
    url, ref = maria_inbox
    topic, group = nats_stream.topic("orders"), unique("grp")
    poison, fine = str(uuid.uuid4()), str(uuid.uuid4())
    record = _record(ref.schema or "")

    def handler(conn: Any, event: Any) -> None:
        record(conn, event)  # written, then rolled back when we raise
        if event.id == poison:
            raise ValueError(f"cannot handle {event.id}")

    runner = InboxRunner(
        lambda: NatsConsumer(nats_stream.url, group=group, topics=[topic]),
        url,
        group,
        handler,
        ref=ref,
        max_attempts=2,
        retry_base=0.05,
        retry_cap=0.2,
    )
    async with _Runner(runner) as r:
        await publish_raw(nats_stream, topic, poison, "a", {})
        await publish_raw(nats_stream, topic, fine, "b", {})
        await wait_for(lambda: r.stats.dead_lettered == 1 and r.stats.processed == 1, timeout=30)
    assert _side_effects(url, ref) == [fine]
    conn = connect_sync(url)
    try:
        dead = conn.execute(f"SELECT event_id, attempts, error FROM {ref.derived('dead', '`')}").fetchall()
    finally:
        conn.close()
    assert [(d[0], d[1]) for d in dead] == [(poison, 2)]
    assert "ValueError: cannot handle" in dead[0][2]


def test_retention_deletes_only_old_ids(maria_inbox: tuple[str, TableRef]) -> None:
    url, ref = maria_inbox
    conn = connect_sync(url)
    try:
        table = ref.quoted("`")
        conn.execute(
            f"INSERT INTO {table} (consumer, event_id, processed_at) VALUES ('c', 'old', %s)", ("2000-01-01 00:00:00",)
        )
        conn.execute(f"INSERT INTO {table} (consumer, event_id) VALUES ('c', 'new')")
    finally:
        conn.close()
    assert cleanup_inbox(url, ref, older_than=timedelta(days=7)) == 1
    conn = connect_sync(url)
    try:
        assert [r[0] for r in conn.execute(f"SELECT event_id FROM {ref.quoted('`')}").fetchall()] == ["new"]
    finally:
        conn.close()
