"""``relay --capture wal`` through a database restart and a broker restart (issue 18 item 6), each
twice, while the relay drains a backlog: on a private PostgreSQL and a private NATS this test
starts (the shared servers are never restarted). Every committed event arrives, first deliveries
keep per-key commit order, and the relay exits 0 on SIGTERM. Duplicates are allowed (G6: after a
restart the slot may resume a little before what the relay confirmed; docs/log-tailing.md)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from outboxkit import migrate
from outboxkit.brokers.nats import connect, ensure_stream
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.wal import migrate_wal
from outboxkit.testing.chaosdb import PrivatePostgres
from outboxkit.testing.servers import NatsServer, RelayProcess
from tests.helpers import emit_many, pending, read_all

KEYS = 7
BATCH = 600


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
@pytest.mark.parametrize("reader", ["stream", "sql"])
async def test_database_and_broker_restarts_lose_nothing(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pgserver")
    from outboxkit.stores.postgres.wal import READER_ENV

    monkeypatch.setenv(READER_ENV, reader)  # the relay process inherits it
    # Outside pytest's tmp tree: the private PostgreSQL runs as another system user.
    workdir = Path(tempfile.mkdtemp(prefix="outboxkit-wal-restarts-"))
    pg = PrivatePostgres(workdir / "pg", logical=True)
    nats = NatsServer(str(workdir / "nats")).start()
    relay: RelayProcess | None = None
    try:
        db, ref = pg.url, TableRef("outbox", "app")
        migrate(db, ref)
        migrate_wal(db, ref)
        nc = await connect(nats.url)
        await ensure_stream(nc, "RESTARTS", ["restarts.>"])
        await nc.close()
        log = workdir / "relay.log"
        args = ["--schema", "app", "--capture", "wal", "--lease-ttl", "2", "--poll-interval", "0.1"]
        relay = RelayProcess(db, nats.url, *args, log_path=str(log)).start()
        ids: list[str] = []
        faults = [("database", pg.restart), ("broker", lambda: nats.restart(0.5))] * 2
        for n, (_, fault) in enumerate(faults):
            start = n * BATCH
            payloads = [{"i": i} for i in range(start, start + BATCH)]
            ids += await asyncio.to_thread(
                emit_many, db, ref, "restarts.orders", payloads, key=lambda i: f"k{i % KEYS}"
            )
            # The relay is draining this batch (or about to): the fault hits it mid-way.
            await asyncio.sleep(0.05)
            await asyncio.to_thread(fault)
            relay.ensure_running()  # a relay that could not start exits by design; a supervisor restarts it
        deadline = time.monotonic() + 120
        while await asyncio.to_thread(pending, db, ref) and time.monotonic() < deadline:
            relay.ensure_running()
            await asyncio.sleep(0.1)
        got = await read_all(nats.url, "RESTARTS", expect=len(ids), idle=1.0, timeout=120)
        assert relay.stop() == 0, log.read_text()[-3000:]
    finally:
        if relay is not None:
            relay.kill()
        nats.close()
        pg.close()
        shutil.rmtree(workdir, ignore_errors=True)
    first: dict[str, list[int]] = {}
    seen: set[str] = set()
    for m in got:
        if m.event_id not in seen:
            seen.add(m.event_id)
            first.setdefault(m.key or "", []).append(json.loads(m.payload)["i"])
    assert set(ids) <= seen, f"lost {len(set(ids) - seen)} of {len(ids)}"
    assert seen <= set(ids), "phantom events"
    assert all(v == sorted(v) for v in first.values()), "per-key order among first deliveries"
