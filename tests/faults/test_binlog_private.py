"""Binlog tailing against a MariaDB this test owns (the shared server is never restarted or purged):
a database restart while events are written (G8), then a real ``PURGE BINARY LOGS`` behind a
stopped relay — the one-line error, and ``--resume-from-now`` publishing every event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outboxkit import migrate
from outboxkit.relay import RelayConfig
from outboxkit.relay.tail import build_tail_relay
from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb.binlogpos import migrate_binlog
from tests.conftest import Stream
from tests.helpers import db_connect, emit_many, pending, read_all

MARIADBD = shutil.which("mariadbd", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
INSTALL = shutil.which("mariadb-install-db")


class PrivateMariaDb:
    """A throw-away MariaDB on a Unix socket, with the row binlog the relay needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket = root / "sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql://root@localhost/test?unix_socket={self.socket}"

    def install(self) -> None:
        assert INSTALL is not None
        args = [INSTALL, "--no-defaults", f"--datadir={self.data}", "--user=root", "--skip-test-db"]
        subprocess.run(
            [*args, "--auth-root-authentication-method=normal"],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        assert MARIADBD is not None
        args = [MARIADBD, "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}", "--skip-networking"]
        args += ["--user=root", f"--log-bin={self.data}/pmb", "--binlog-format=ROW", "--binlog-row-metadata=FULL"]
        args += ["--server-id=1", "--innodb-buffer-pool-size=16M", f"--pid-file={self.root}/pid"]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the server process keeps it)
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                conn = db_connect(self.url.replace("/test?", "/mysql?"))
                conn.execute("CREATE DATABASE IF NOT EXISTS test")
                conn.close()
                return
            time.sleep(0.1)
        raise AssertionError((self.root / "server.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None


@pytest.fixture
def private_mariadb() -> Iterator[PrivateMariaDb]:
    if MARIADBD is None or INSTALL is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mariadbd and mariadb-install-db are needed for the private MariaDB")
        pytest.skip("no mariadbd on this machine")
    root = Path(tempfile.mkdtemp(prefix="outboxkit-mariadb-"))
    server = PrivateMariaDb(root)
    try:
        server.install()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outboxkit", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
async def test_database_restart_then_purged_binlog_and_resume_from_now(
    private_mariadb: PrivateMariaDb, nats_stream: Stream
) -> None:
    db = private_mariadb.url
    ref = TableRef("outbox", "app")
    migrate(db, ref)
    migrate_binlog(db, ref)
    topic = nats_stream.topic("orders")
    relay = build_tail_relay(
        db, nats_stream.url, ref=ref, config=RelayConfig(poll_interval=0.05, lease_ttl=2.0, retry_cap=0.5)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        ids = await asyncio.to_thread(
            emit_many, db, ref, topic, [{"i": i} for i in range(30)], key=lambda i: f"k{i % 3}"
        )
        async with asyncio.timeout(20):
            while relay.stats.published < 30:
                await asyncio.sleep(0.05)
        # G8: the database restarts (a new binlog file, new table ids); the relay reconnects by itself.
        await asyncio.to_thread(private_mariadb.stop)
        await asyncio.to_thread(private_mariadb.start)
        ids += await asyncio.to_thread(
            emit_many, db, ref, topic, [{"i": i} for i in range(30, 60)], key=lambda i: f"k{i % 3}"
        )
        async with asyncio.timeout(40):
            while relay.stats.published < 60:
                await asyncio.sleep(0.05)
        assert relay.stats.outages >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    # The relay is down; events keep coming; the binlog it needs is purged (server-wide: this
    # server is the test's own).
    ids += await asyncio.to_thread(
        emit_many, db, ref, topic, [{"i": i} for i in range(60, 80)], key=lambda i: f"k{i % 3}"
    )
    conn = db_connect(db)
    try:
        saved = conn.execute("SELECT log_file FROM app.outbox_binlog").fetchone()[0]
        deadline = time.monotonic() + 20
        while True:
            # A file the server still needs for crash recovery (its binlog checkpoint) is kept by
            # PURGE: rotate and retry until the relay's file is really gone.
            conn.execute("FLUSH BINARY LOGS")
            current = conn.execute("SHOW MASTER STATUS").fetchone()[0]
            conn.execute(f"PURGE BINARY LOGS TO '{current}'")
            if saved not in {r[0] for r in conn.execute("SHOW BINARY LOGS").fetchall()}:
                break
            assert time.monotonic() < deadline, "the binlog was not purged"
            await asyncio.sleep(0.2)
    finally:
        conn.close()
    args = ["relay", "--db", db, "--schema", "app", "--broker", nats_stream.url, "--capture", "binlog"]
    gone = await asyncio.to_thread(cli, *args, "--lease-ttl", "2")
    assert gone.returncode == 1, gone.stderr
    lines = [line for line in gone.stderr.splitlines() if "no longer on the server" in line]
    assert len(lines) == 1 and "--resume-from-now" in lines[0], gone.stderr

    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "outboxkit", *args, "--lease-ttl", "2", "--resume-from-now"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(pending, db, ref) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        ids += await asyncio.to_thread(
            emit_many, db, ref, topic, [{"i": i} for i in range(80, 100)], key=lambda i: f"k{i % 3}"
        )
        got = await read_all(nats_stream.url, nats_stream.name, expect=100, timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, err
    firsts: dict[str, list[int]] = {}
    seen: set[str] = set()
    for m in got:
        if m.event_id not in seen:
            seen.add(m.event_id)
            firsts.setdefault(m.key or "", []).append(json.loads(m.payload)["i"])
    assert seen == set(ids), f"lost {len(set(ids) - seen)}"
    assert all(v == sorted(v) for v in firsts.values())


def _table_ids(db: str) -> dict[str, int]:
    """Table ids the binlog's table maps gave each table of schema ``app``, newest last."""
    conn = db_connect(db)
    try:
        files = [r[0] for r in conn.execute("SHOW BINARY LOGS").fetchall()]
        ids: dict[str, int] = {}
        for name in files:
            for row in conn.execute(f"SHOW BINLOG EVENTS IN '{name}'").fetchall():
                info = str(row[5])
                if row[2] == "Table_map" and "(app." in info:
                    ids[info.split("(app.")[1].rstrip(")")] = int(info.split("table_id: ")[1].split(" ")[0])
        return ids
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
async def test_a_table_id_reused_after_a_restart_is_not_read_with_the_outbox_columns(
    private_mariadb: PrivateMariaDb, nats_stream: Stream
) -> None:
    """After a restart the server numbers table ids anew. A relay that reads across the restart
    cached the outbox's table map under its old id (``freeze_schema``); rows of another table that
    now has that id were decoded with the outbox's columns and failed ("Result length not requested
    length"). Here the old code recovers after a failed round (the relay saved a position past the
    old file's outbox rows); in the soak, with the stream reading ahead of confirmations, every relay
    failed before it saved anything, forever. Coverage of the fix, not a reproduction of the soak."""
    db = private_mariadb.url
    ref = TableRef("outbox", "app")
    migrate(db, ref)
    migrate_binlog(db, ref)
    topic = nats_stream.topic("orders")
    ids = await asyncio.to_thread(emit_many, db, ref, topic, [{"i": i} for i in range(10)], key=lambda i: "k")
    outbox_id = _table_ids(db)["outbox"]
    await asyncio.to_thread(private_mariadb.stop)
    await asyncio.to_thread(private_mariadb.start)
    # New tables of another shape, one row each, until one of them is given the outbox's old id.
    conn = db_connect(db)
    try:
        for n in range(200):
            conn.execute(f"CREATE TABLE app.t{n} (a INT, b INT, c INT)")
            conn.execute(f"INSERT INTO app.t{n} VALUES (1, 2, 3)")
            taken = _table_ids(db).get(f"t{n}")
            if taken is not None and taken >= outbox_id:
                break
    finally:
        conn.close()
    assert taken == outbox_id, f"no table took the outbox's old id {outbox_id} (last: {taken})"
    ids += await asyncio.to_thread(emit_many, db, ref, topic, [{"i": i} for i in range(10, 20)], key=lambda i: "k")
    relay = build_tail_relay(db, nats_stream.url, ref=ref, config=RelayConfig(poll_interval=0.05, retry_cap=0.5))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        got = await read_all(nats_stream.url, nats_stream.name, expect=len(ids), timeout=30)
        assert [m.event_id for m in got] == ids
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
