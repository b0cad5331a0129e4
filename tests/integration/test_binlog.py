"""``relay --capture binlog``: the MariaDB binlog tailed, on the shared server (never purged here)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from outboxkit import Outbox
from outboxkit.relay.tail import TailRelay
from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb.binlogpos import position_table
from outboxkit.stores.registry import log_capture_for
from outboxkit.testing.tailing import tail_relay
from tests.conftest import Stream
from tests.helpers import db_connect, pending, read_all

# Binlog dumps are server-wide and a test here KILLs "its" relay's dump thread, found as the one
# that appeared in the processlist: every reader of the shared binlog runs in this one xdist group.
pytestmark = pytest.mark.xdist_group("binlog")


@pytest.fixture
def binlog_ref(mariadb_url: str, mariadb_ref: TableRef) -> Iterator[TableRef]:
    """The test's outbox with its binlog position table (dropped with the test's database)."""
    log_capture_for(mariadb_url, "binlog").migrate(mariadb_url, mariadb_ref)
    yield mariadb_ref


def binlog_relay(db: str, broker: str, ref: TableRef, **config: object) -> TailRelay:
    return tail_relay(db, broker, ref, "binlog", **{"lease_ttl": 2.0, **config})


# Commit order, rollbacks and marks, dead letters of bad rows, the standby's takeover, rows of other
# tables: the tail-reader conformance suite (tests/conformance/test_tailing.py) runs them on every
# log capture.


def stored(db: str, ref: TableRef) -> tuple[Any, ...]:
    conn = db_connect(db)
    try:
        row = conn.execute(f"SELECT log_file, log_pos, gtid FROM {position_table(ref)}").fetchone()
    finally:
        conn.close()
    return tuple(row)


async def test_g3_position_holds_until_the_broker_confirms(
    mariadb_url: str, binlog_ref: TableRef, nats_stream: Stream
) -> None:
    """No stream captures the subject: no PubAck, the event is retried and the stored position
    does not move past it; once a stream exists it is delivered, and only then does it move."""
    from outboxkit.brokers.nats import connect, ensure_stream

    unrouted = f"{nats_stream.prefix}_late.orders"
    outbox = Outbox(table=binlog_ref.table, schema=binlog_ref.schema)
    conn = db_connect(mariadb_url)
    try:
        conn.execute("BEGIN")
        event_id = outbox.emit(conn, unrouted, {"i": 1}, key="k")
        conn.execute("COMMIT")
    finally:
        conn.close()
    before = stored(mariadb_url, binlog_ref)
    relay = binlog_relay(mariadb_url, nats_stream.url, binlog_ref, max_attempts=1000)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(30):
            while relay.stats.failed_attempts < 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.2)  # past the once-a-second save of an idle round
        assert relay.stats.published == 0
        assert stored(mariadb_url, binlog_ref) == before
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
        async with asyncio.timeout(10):
            while stored(mariadb_url, binlog_ref) == before:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert pending(mariadb_url, binlog_ref) == 0


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outboxkit", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_migrate_sql_and_refusals(mariadb_url: str, mariadb_ref: TableRef) -> None:
    sql = cli("migrate", "--sql", "--dialect", "mariadb", "--capture", "binlog")
    assert sql.returncode == 0, sql.stderr
    assert "CREATE TABLE IF NOT EXISTS `outbox_binlog`" in sql.stdout and "SHOW MASTER STATUS" in sql.stdout
    schema = mariadb_ref.schema or ""
    missing = cli(
        "relay", "--db", mariadb_url, "--schema", schema, "--broker", "nats://127.0.0.1:4222", "--capture", "binlog"
    )
    assert missing.returncode != 0 and "migrate --capture binlog" in missing.stderr, missing.stderr
    plain = cli("status", "--db", mariadb_url, "--schema", schema)
    assert plain.returncode == 0 and "capture binlog" not in plain.stdout, plain.stderr
    made = cli("migrate", "--db", mariadb_url, "--schema", schema, "--capture", "binlog")
    assert made.returncode == 0 and "the relay tails from" in made.stderr, made.stderr
    status = cli("status", "--db", mariadb_url, "--schema", schema)
    assert status.returncode == 0, status.stderr
    assert "log tailing (relay --capture binlog): position " in status.stdout and "lag " in status.stdout
    assert "no reader attached right now" in status.stdout
    doc = json.loads(cli("status", "--db", mariadb_url, "--schema", schema, "--json").stdout)
    assert doc["binlog"]["lag_bytes"] >= 0 and doc["binlog"]["gtid"]
    wrong = cli("relay", "--db", "sqlite:///x.db", "--broker", "nats://127.0.0.1:4222", "--capture", "binlog")
    assert wrong.returncode == 2 and "needs MariaDB or MySQL" in wrong.stderr
    wal = cli("relay", "--db", mariadb_url, "--broker", "nats://127.0.0.1:4222", "--capture", "wal")
    assert wal.returncode == 2 and "needs PostgreSQL" in wal.stderr
    resume = cli("relay", "--db", mariadb_url, "--broker", "nats://127.0.0.1:4222", "--resume-from-now")
    assert resume.returncode == 2 and "--capture binlog" in resume.stderr


async def test_purged_binlog_is_one_line_and_resume_from_now_loses_nothing(
    mariadb_url: str, binlog_ref: TableRef, nats_stream: Stream
) -> None:
    """The stored position names a binlog the server does not have (what PURGE BINARY LOGS leaves;
    the shared server's logs are never purged here): the relay stops with one line saying how to
    recover. ``--resume-from-now`` drains the pending rows with the table relay, then tails: every
    event, before and after, arrives."""
    topic = nats_stream.topic("orders")
    outbox = Outbox(table=binlog_ref.table, schema=binlog_ref.schema)

    def emit(n: int, tag: str) -> list[str]:
        conn = db_connect(mariadb_url)
        try:
            ids = []
            for i in range(n):
                conn.execute("BEGIN")
                ids.append(outbox.emit(conn, topic, {"i": i, "tag": tag}, key=f"k{i % 3}"))
                conn.execute("COMMIT")
            return ids
        finally:
            conn.close()

    before = emit(20, "before")
    schema = binlog_ref.schema or ""
    args = ["--db", mariadb_url, "--schema", schema, "--broker", nats_stream.url, "--capture", "binlog"]
    conn = db_connect(mariadb_url)
    try:
        for log_file, gtid in (("mariadb-bin.999999", None), ("mariadb-bin.000001", "0-77-5")):
            conn.execute(
                f"UPDATE {position_table(binlog_ref)} SET log_file = %s, log_pos = 4, gtid = %s", (log_file, gtid)
            )
            gone = await asyncio.to_thread(cli, "relay", *args, "--lease-ttl", "2")
            assert gone.returncode == 1, (gone.returncode, gone.stderr)
            lines = [line for line in gone.stderr.splitlines() if "no longer on the server" in line]
            assert len(lines) == 1 and "--resume-from-now" in lines[0], gone.stderr
            assert "Traceback" not in gone.stderr
    finally:
        conn.close()
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "outboxkit", "relay", *args, "--lease-ttl", "2", "--resume-from-now"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while pending(mariadb_url, binlog_ref) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        after = await asyncio.to_thread(emit, 20, "after")
        got = await read_all(nats_stream.url, nats_stream.name, expect=len(before) + len(after), timeout=30)
        ids = {m.event_id for m in got}
        assert ids >= set(before) | set(after), f"lost {len(set(before) | set(after) - ids)}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert stored(mariadb_url, binlog_ref)[0] != "mariadb-bin.999999"


def dump_threads(db: str) -> set[int]:
    conn = db_connect(db)
    try:
        rows = conn.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'").fetchall()
    finally:
        conn.close()
    return {int(r[0]) for r in rows}


async def test_a_cut_replication_connection_resumes_from_the_stored_position(
    mariadb_url: str, binlog_ref: TableRef, nats_stream: Stream
) -> None:
    """G8: the server ends the relay's binlog dump (as a restart or KILL does); the relay rebuilds
    its reader from the stored position and goes on: nothing lost, keys in order, and the stored
    position never moves back."""
    from tests.helpers import emit_many

    topic = nats_stream.topic("orders")
    others = await asyncio.to_thread(dump_threads, mariadb_url)
    relay = binlog_relay(mariadb_url, nats_stream.url, binlog_ref)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        ids = emit_many(mariadb_url, binlog_ref, topic, [{"i": i} for i in range(50)], key=lambda i: f"k{i % 5}")
        async with asyncio.timeout(20):
            while relay.stats.published < 50:
                await asyncio.sleep(0.05)
        saved = stored(mariadb_url, binlog_ref)
        ours = await asyncio.to_thread(dump_threads, mariadb_url) - others
        assert ours, "the relay's binlog dump is listed by the server"
        conn = db_connect(mariadb_url)
        try:
            for thread in ours:
                conn.execute(f"KILL CONNECTION {thread}")
        finally:
            conn.close()
        ids += emit_many(mariadb_url, binlog_ref, topic, [{"i": i} for i in range(50, 100)], key=lambda i: f"k{i % 5}")
        async with asyncio.timeout(30):
            while relay.stats.published < 100:
                await asyncio.sleep(0.05)
        assert relay.stats.outages >= 1
        now = stored(mariadb_url, binlog_ref)
        assert int(now[2].split("-")[-1]) >= int(saved[2].split("-")[-1])  # GTID sequence never back
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    got = await read_all(nats_stream.url, nats_stream.name, expect=100)
    firsts: dict[str, list[int]] = {}
    seen: set[str] = set()
    for m in got:
        if m.event_id not in seen:
            seen.add(m.event_id)
            firsts.setdefault(m.key or "", []).append(json.loads(m.payload)["i"])
    assert seen == set(ids)
    assert all(v == sorted(v) for v in firsts.values())


async def test_an_altered_outbox_is_read_with_its_new_columns(
    mariadb_url: str, binlog_ref: TableRef, nats_stream: Stream
) -> None:
    """The reader decodes a table's column map once per table id (``freeze_schema``): an ALTER TABLE
    gives the table a new id, so rows written after it are read with the new columns (a column
    added in the middle would shift every later one if the old map were kept)."""
    from tests.helpers import emit_many

    topic = nats_stream.topic("orders")
    relay = binlog_relay(mariadb_url, nats_stream.url, binlog_ref)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        ids = emit_many(mariadb_url, binlog_ref, topic, [{"i": 0}], key=lambda i: "k")
        async with asyncio.timeout(20):
            while relay.stats.published < 1:
                await asyncio.sleep(0.05)
        conn = db_connect(mariadb_url)
        try:
            conn.execute(
                f"ALTER TABLE `{binlog_ref.schema}`.`{binlog_ref.table}` ADD COLUMN tenant VARCHAR(10) AFTER seq"
            )
        finally:
            conn.close()
        ids += emit_many(mariadb_url, binlog_ref, topic, [{"i": 1}], key=lambda i: "k")
        async with asyncio.timeout(20):
            while relay.stats.published + relay.stats.dead_lettered < 2:
                await asyncio.sleep(0.05)
        assert relay.stats.dead_lettered == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    got = await read_all(nats_stream.url, nats_stream.name, expect=2)
    assert [m.event_id for m in got] == ids
    assert [json.loads(m.payload) for m in got] == [{"i": 0}, {"i": 1}] and got[1].key == "k"


def test_the_replication_stream_is_never_reopened_by_the_client_library(mariadb_url: str) -> None:
    """mysql-replication reconnects its stream by itself after "server gone", from the GTID it was
    started at (duplicates; and two streams of one server id that take the dump from each other).
    The reader's wrapper opens the stream connection once; the control connection may reconnect."""
    from outboxkit.stores.mariadb.binlog import StreamLostError, _StreamOnce
    from outboxkit.stores.mariadb.driver import parse_url

    p = parse_url(mariadb_url)
    settings = {"host": p.host, "port": p.port, "user": p.user, "passwd": p.password}
    wrapper = _StreamOnce()
    for _ in range(2):  # the control connection, as the library opens it
        wrapper(**settings, db="information_schema").close()
    wrapper(**settings).close()  # the stream, once
    with pytest.raises(StreamLostError, match="rebuilt from the stored position"):
        wrapper(**settings)
