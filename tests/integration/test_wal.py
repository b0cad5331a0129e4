"""``relay --capture wal``: PostgreSQL logical decoding, with table rows and table-less messages."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from outboxkit import Outbox
from outboxkit.core.walmessage import prefix_for
from outboxkit.relay.tail import TailRelay
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.pgoutput import parse_lsn
from outboxkit.stores.postgres.wal import resolve_slot, slot_info
from outboxkit.stores.registry import log_capture_for
from outboxkit.testing.tailing import relay_until
from outboxkit.testing.tailing import tail_relay as conformance_relay
from outboxkit.walemit import MessageOutbox
from tests.conftest import Stream
from tests.helpers import pending, read_all


@pytest.fixture
def wal_ref(pg_url: str, pg_ref: TableRef) -> Iterator[TableRef]:
    """The test's outbox with its publication and slot; the slot is dropped after the test."""
    log_capture_for(pg_url, "wal").migrate(pg_url, pg_ref)
    yield pg_ref
    log_capture_for(pg_url, "wal").drop(pg_url, pg_ref)


def tail_relay(db: str, broker: str, ref: TableRef, **config: object) -> TailRelay:
    return conformance_relay(db, broker, ref, "wal", **{"lease_ttl": 2.0, **config})


async def test_commit_order_rollbacks_and_messages(pg_url: str, wal_ref: TableRef, nats_stream: Stream) -> None:
    """A transaction that took its seq first and committed last comes last; a rollback never comes;
    table-less messages come at their transaction's place; table rows are marked delivered."""
    topic = nats_stream.topic("orders")
    outbox = Outbox(table=wal_ref.table, schema=wal_ref.schema)
    messages = MessageOutbox(table=wal_ref.table, schema=wal_ref.schema)
    with psycopg.connect(pg_url, autocommit=True) as early, psycopg.connect(pg_url, autocommit=True) as conn:
        early.execute("BEGIN")
        late_id = outbox.emit(early, topic, {"n": "late"}, key="k")  # takes the lowest seq
        order = []
        for i in range(5):
            conn.execute("BEGIN")
            order.append(outbox.emit(conn, topic, {"n": i}, key="k"))
            order.append(messages.emit(conn, topic, {"m": i}, key="k", headers={"h": "v"}))
            conn.execute("COMMIT")
        with conn.transaction():  # another outbox of the same database: its relay's business, not ours
            foreign = MessageOutbox(table="outbox", schema=f"{wal_ref.schema}_other").emit(conn, topic, {}, key="k")
        conn.execute("BEGIN")
        rolled = [outbox.emit(conn, topic, {"n": "x"}, key="k"), messages.emit(conn, topic, {"m": "x"}, key="k")]
        conn.execute("ROLLBACK")
        early.execute("COMMIT")
        order.append(late_id)
    relay = tail_relay(pg_url, nats_stream.url, wal_ref)
    await relay_until(relay, lambda: relay.stats.published >= len(order))
    got = await read_all(nats_stream.url, nats_stream.name, expect=len(order))
    assert [m.event_id for m in got] == order
    assert not {m.event_id for m in got} & {*rolled, foreign}
    assert json.loads(got[1].payload) == {"m": 0} and got[1].headers.get("h") == "v" and got[1].key == "k"
    assert pending(pg_url, wal_ref) == 0
    info = slot_info(pg_url, resolve_slot(pg_url, wal_ref))
    # Caught up: nothing of ours waits. Other tests' table-less events (every slot of the database
    # sees every logical message) may have arrived since the relay stopped, so not exactly zero.
    assert info.exists and info.lag_seconds is not None and info.lag_seconds < 10.0


async def test_bad_rows_and_messages_become_dead_letters(pg_url: str, wal_ref: TableRef, nats_stream: Stream) -> None:
    """H11: a row or a message that cannot become a message is a dead letter with the reason; later
    events of its key are held (as dead letters) and every other key flows."""
    topic = nats_stream.topic("orders")
    outbox = Outbox(table=wal_ref.table, schema=wal_ref.schema)
    t = wal_ref.qualified
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {t} (topic, key, payload) VALUES ('bad topic!', 'bad', '\\x00')".encode())
        conn.execute(
            'SELECT pg_logical_emit_message(true, %s, convert_to(\'{"v":1,"topic":"x"}\', \'UTF8\'))',
            [prefix_for(wal_ref.table, wal_ref.schema)],
        )
        with conn.transaction():
            after_bad = outbox.emit(conn, topic, {"i": 1}, key="bad")
            good = outbox.emit(conn, topic, {"i": 2}, key="good")
    relay = tail_relay(pg_url, nats_stream.url, wal_ref)
    await relay_until(relay, lambda: relay.stats.published + relay.stats.dead_lettered >= 4)
    got = await read_all(nats_stream.url, nats_stream.name, expect=1)
    assert [m.event_id for m in got] == [good]
    with psycopg.connect(pg_url) as conn:
        dead = conn.execute(f"SELECT id::text, last_error FROM {t} WHERE dead_at IS NOT NULL ORDER BY seq".encode())
        rows = dead.fetchall()
    assert len(rows) == 3
    assert "bad topic" in rows[0][1] or "topic" in rows[0][1]
    assert rows[1][0] == after_bad and "held" in rows[1][1]
    assert "message cannot be published" in rows[2][1]


# H4 (an idle outbox beside busy tables retains no WAL), G1/G2/G5/H1 for rows, dead letters of
# rows, the standby's takeover, other tools' traffic: the tail-reader conformance suite
# (tests/conformance/test_tailing.py) runs them on every log capture.


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outboxkit", *args], capture_output=True, text=True, timeout=60)


def test_cli_migrate_sql_slot_status_and_drop(pg_url: str, pg_ref: TableRef) -> None:
    sql = cli("migrate", "--sql", "--db", "postgresql://app@db.example/shop", "--capture", "wal")
    assert sql.returncode == 0, sql.stderr
    assert 'CREATE PUBLICATION "outboxkit_shop_outbox"' in sql.stdout
    assert "pg_create_logical_replication_slot('outboxkit_shop_outbox', 'pgoutput')" in sql.stdout
    # The slot's name includes the database: a dialect alone cannot name it.
    assert cli("migrate", "--sql", "--dialect", "postgresql", "--capture", "wal").returncode == 2
    schema = pg_ref.schema or ""
    made = cli("migrate", "--db", pg_url, "--schema", schema, "--capture", "wal")
    assert made.returncode == 0, made.stderr
    try:
        status = cli("slot", "status", "--db", pg_url, "--schema", schema)
        assert status.returncode == 0, status.stderr
        assert f"slot {resolve_slot(pg_url, pg_ref)}: confirmed" in status.stdout and "lag" in status.stdout
        assert ("max_slot_wal_keep_size is unlimited" in status.stderr) == (
            slot_info(pg_url, resolve_slot(pg_url, pg_ref)).max_slot_wal_keep_size_mb < 0
        )
        overall = cli("status", "--db", pg_url, "--schema", schema)
        assert overall.returncode == 0, overall.stderr
        assert f"log tailing (relay --capture wal): slot {resolve_slot(pg_url, pg_ref)} lag" in overall.stdout
        refused = cli("slot", "drop", "--db", pg_url, "--schema", schema)
        assert refused.returncode == 2 and "--yes" in refused.stderr
    finally:
        dropped = cli("slot", "drop", "--db", pg_url, "--schema", schema, "--yes")
    assert dropped.returncode == 0 and "dropped" in dropped.stdout
    assert not slot_info(pg_url, resolve_slot(pg_url, pg_ref)).exists
    wrong = cli("relay", "--db", "sqlite:///x.db", "--broker", "nats://127.0.0.1:4222", "--capture", "wal")
    assert wrong.returncode == 2 and "needs PostgreSQL" in wrong.stderr
    missing = cli("relay", "--db", pg_url, "--schema", schema, "--broker", "nats://127.0.0.1:4222", "--capture", "wal")
    assert missing.returncode != 0 and "migrate --capture wal" in missing.stderr


async def test_g3_unconfirmed_events_hold_the_slot_until_the_broker_confirms(
    pg_url: str, wal_ref: TableRef, nats_stream: Stream
) -> None:
    """No stream captures the subject: no PubAck, the event is retried (its key waits) and the slot
    does not move past it; once a stream exists it is delivered, and only then the slot moves."""
    from outboxkit.brokers.nats import connect, ensure_stream

    unrouted = f"{nats_stream.prefix}_late.orders"
    outbox = Outbox(table=wal_ref.table, schema=wal_ref.schema)
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.transaction():
        event_id = outbox.emit(conn, unrouted, {"i": 1}, key="k")
    before = slot_info(pg_url, resolve_slot(pg_url, wal_ref)).confirmed_lsn
    relay = tail_relay(pg_url, nats_stream.url, wal_ref, max_attempts=1000)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(30):
            while relay.stats.failed_attempts < 2:
                await asyncio.sleep(0.05)
        assert relay.stats.published == 0
        assert slot_info(pg_url, resolve_slot(pg_url, wal_ref)).confirmed_lsn == before
        assert pending(pg_url, wal_ref) == 1
        nc = await connect(nats_stream.url)
        try:
            await ensure_stream(nc, f"{nats_stream.name}_LATE", [f"{nats_stream.prefix}_late.>"])
            async with asyncio.timeout(30):
                while relay.stats.published < 1:
                    await asyncio.sleep(0.05)
            got = await read_all(nats_stream.url, f"{nats_stream.name}_LATE", expect=1)
            assert [m.event_id for m in got] == [event_id]
        finally:
            await nc.jetstream().delete_stream(f"{nats_stream.name}_LATE")
            await nc.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    after = slot_info(pg_url, resolve_slot(pg_url, wal_ref)).confirmed_lsn
    assert after is not None and before is not None and parse_lsn(after) > parse_lsn(before)
    assert pending(pg_url, wal_ref) == 0


async def test_rows_deleted_in_the_writers_transaction_are_still_published(
    pg_url: str, wal_ref: TableRef, nats_stream: Stream
) -> None:
    """An outbox that stays empty: the writer deletes its row in the same transaction; the log
    still holds the insert, which is what the publication carries."""
    topic = nats_stream.topic("orders")
    outbox = Outbox(table=wal_ref.table, schema=wal_ref.schema)
    ids = []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for i in range(3):
            with conn.transaction():
                ids.append(outbox.emit(conn, topic, {"i": i}, key="k"))
                conn.execute(f"DELETE FROM {wal_ref.qualified} WHERE id = %s".encode(), [ids[-1]])
        with conn.transaction():  # a bad row, deleted too: its dead letter needs a row of its own
            t = wal_ref.qualified
            conn.execute(f"INSERT INTO {t} (topic, key, payload) VALUES ('bad topic!', 'b', '')".encode())
            conn.execute(f"DELETE FROM {t} WHERE key = 'b'".encode())
    relay = tail_relay(pg_url, nats_stream.url, wal_ref)
    await relay_until(relay, lambda: relay.stats.published >= 3 and relay.stats.dead_lettered >= 1)
    got = await read_all(nats_stream.url, nats_stream.name, expect=3)
    assert [m.event_id for m in got] == ids
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f"SELECT key, dead_at IS NOT NULL FROM {wal_ref.qualified}".encode()).fetchall()
    assert rows == [("b", True)]  # only the dead letter
