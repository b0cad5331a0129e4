"""Crash test on MariaDB: 20,000 events from 4 writers, 3 relays sharing the outbox through bucket
leases, 10 relay SIGKILLs and one relay SIGSTOPped past its lease. Nothing may be lost (G1), nothing
rolled back may be published (G2), no key may be reordered (G5, H10), and the paused relay's late
marks are fenced (H6)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outboxkit import migrate
from outboxkit.core.tally import Delivery, tally
from outboxkit.testing import RelayProcess
from outboxkit.testing.workload import OrdersWorkload
from tests.conftest import MARIADB_URL, drop_stream, make_stream, require, unique
from tests.helpers import pending, read_all

TTL = 2.0  # seconds: short, so that hand-overs happen many times within the run
EVENTS = 20_000
KILLS = 10


@pytest.fixture
def maria_orders(nats_url: str) -> Iterator[OrdersWorkload]:
    require("MariaDB", "127.0.0.1", 3306)
    workload = OrdersWorkload(MARIADB_URL, topic_prefix=unique("okm"), schema=unique("okm"), keys=200)
    migrate(MARIADB_URL, workload.ref)
    workload.setup()
    yield workload
    workload.drop()


def _writers(workload: OrdersWorkload, stop: threading.Event, target: int) -> list[threading.Thread]:
    committed = [0]
    lock = threading.Lock()

    def counted(events: int) -> None:
        with lock:
            committed[0] += events
            if committed[0] >= target:
                stop.set()
        stop.wait(0.002)  # a little room between transactions: the faults land while writers write

    threads = [
        threading.Thread(
            target=workload.write,
            args=(10**9,),
            kwargs={"seed": 100 + i, "stop": stop, "on_commit": counted, "survive_outages": True},
            daemon=True,
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    return threads


@pytest.mark.slow
async def test_mariadb_20000_events_4_writers_10_sigkills_3_relays_one_paused_past_its_lease(
    maria_orders: OrdersWorkload, nats_url: str, tmp_path: Path
) -> None:
    assert maria_orders.schema is not None
    stream = await make_stream(nats_url, maria_orders.topic.split(".")[0])
    relays = [
        RelayProcess(
            MARIADB_URL,
            nats_url,
            "--schema",
            maria_orders.schema,
            "--lease-ttl",
            str(TTL),
            "--poll-interval",
            "0.2",
            log_path=str(tmp_path / f"relay{i}.log"),
        )
        for i in range(3)
    ]
    rng = random.Random(9)
    stop = threading.Event()
    started = time.monotonic()
    try:
        for r in relays:
            r.start()
        writers = _writers(maria_orders, stop, EVENTS)
        kills, paused = 0, False
        while kills < KILLS or not paused:
            await asyncio.sleep(rng.uniform(0.8, 1.6))
            if not paused and kills == KILLS // 2:
                # One relay freezes (SIGSTOP: a long GC, a frozen VM) for twice its lease: the others
                # take its buckets over with higher epochs; when it thaws, its marks are fenced.
                victim = relays[kills % 3]
                assert victim.proc is not None
                os.kill(victim.proc.pid, signal.SIGSTOP)
                await asyncio.sleep(TTL * 2)
                os.kill(victim.proc.pid, signal.SIGCONT)
                paused = True
                continue
            victim = rng.choice(relays)
            victim.kill()
            kills += 1
            await asyncio.sleep(0.1)
            victim.start()
        for w in writers:
            await asyncio.to_thread(w.join)
        writing = time.monotonic() - started
        deadline = time.monotonic() + 120
        while await asyncio.to_thread(pending, maria_orders.db, maria_orders.ref) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert sum(r.kills for r in relays) == KILLS
        for r in relays:
            assert r.stop() == 0
        committed = await asyncio.to_thread(maria_orders.committed)
        got = await read_all(stream.url, stream.name, expect=len(committed), timeout=120)
        result = tally(committed, [Delivery(m.event_id, m.key, None) for m in got])
        print(f"wrote for {writing:.1f}s; {result.as_dict()}")
        assert result.committed >= EVENTS
        assert maria_orders.stats.rolled_back_ids, "some transactions rolled back on purpose"
        assert result.lost == 0, result
        assert result.phantom == 0, result
        assert result.order_violations == 0, result
        logs = "".join((tmp_path / f"relay{i}.log").read_text() for i in range(3))
        assert "buckets taken over" in logs
    finally:
        stop.set()
        for r in relays:
            r.kill()
        await drop_stream(stream)
