"""Many relays on one PostgreSQL outbox: bucket leases, fencing (H6), hand-over on death, order (G5)
kept across hand-overs, and no key overtaken after a crash (H10)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.core.leases import surplus
from outboxkit.core.tally import Delivery, tally
from outboxkit.stores.base import BUCKETS, Filter, TableRef
from outboxkit.stores.postgres import PostgresOutboxStore
from outboxkit.testing import RelayProcess
from outboxkit.testing.workload import OrdersWorkload
from tests.conftest import PG_URL, Stream, drop_stream, make_stream, require, unique
from tests.helpers import emit_many, read_all

TTL = "2"  # seconds: short, so that hand-overs happen many times within a test


async def test_h6_a_relay_that_lost_its_lease_cannot_mark(pg_url: str, pg_ref: TableRef) -> None:
    a, b = PostgresOutboxStore(pg_url, pg_ref), PostgresOutboxStore(pg_url, pg_ref)
    await a.open()
    await b.open()
    try:
        leases_a = (await a.maintain_leases("relay-a", {}, 5.0, rebalance=True)).held
        assert len(leases_a) == BUCKETS
        emit_many(pg_url, pg_ref, "t.x", [{"i": i} for i in range(20)], key=lambda i: f"k{i}")
        rows = await a.fetch_pending(100, Filter(), leases_a)
        assert len(rows) == 20
        # relay-a pauses (SIGSTOP, GC, partition) past its TTL: its leases and heartbeat expire.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"UPDATE {pg_ref.derived('leases')} SET expires_at = now() - interval '1 second'".encode())
            conn.execute(f"UPDATE {pg_ref.derived('relays')} SET heartbeat_at = now() - interval '1 hour'".encode())
        leases_b = (await b.maintain_leases("relay-b", {}, 5.0, rebalance=True)).held
        assert len(leases_b) == BUCKETS
        assert all(leases_b[k] == leases_a[k] + 1 for k in leases_b), "a take-over raises the epoch"
        # relay-a wakes up and tries to mark what it published before the pause: fenced.
        assert await a.mark_delivered([r.seq for r in rows], leases_a) == 0
        assert not await a.record_failure(rows[0].seq, "late", dead=True, leases=leases_a)
        # relay-a's renewal finds nothing left to renew.
        assert (await a.maintain_leases("relay-a", leases_a, 5.0, rebalance=False)).held == {}
        # The new owner fetches the same rows (from the lowest seq: no key overtaken, H10) and marks them.
        again = await b.fetch_pending(100, Filter(), leases_b)
        assert [r.seq for r in again] == [r.seq for r in rows]
        assert await b.mark_delivered([r.seq for r in again], leases_b) == 20
    finally:
        await a.close()
        await b.close()


async def test_relays_share_buckets_and_rebalance(pg_url: str, pg_ref: TableRef) -> None:
    stores = [PostgresOutboxStore(pg_url, pg_ref) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        held: list[dict[int, int]] = [{}, {}, {}]

        async def round_of(i: int) -> None:
            # What a relay's lease keeper does: renew and acquire, then give back the surplus
            # (the relay releases it once drained; here nothing is in flight).
            grant = await stores[i].maintain_leases(f"r{i}", held[i], 5.0, rebalance=True)
            extra = surplus(grant.held, grant.share)
            await stores[i].release_leases(f"r{i}", extra)
            held[i] = {b: e for b, e in grant.held.items() if b not in extra}

        for _ in range(3):  # a few maintenance rounds: joiners appear, the first one gives buckets back
            for i in range(3):
                await round_of(i)
        sizes = sorted(len(h) for h in held)
        assert sum(sizes) == BUCKETS and sizes[-1] <= -(-BUCKETS // 3), sizes  # nobody above its fair share
        assert not (held[0].keys() & held[1].keys()) and not (held[1].keys() & held[2].keys())
        await stores[2].release_leases("r2")  # clean shutdown: buckets free at once
        for _ in range(2):
            for i in (0, 1):
                await round_of(i)
        assert len(held[0]) + len(held[1]) == BUCKETS
    finally:
        for s in stores:
            await s.close()


@pytest.fixture
def pg_orders(nats_url: str) -> Iterator[OrdersWorkload]:
    require("PostgreSQL", "127.0.0.1", 5432)
    workload = OrdersWorkload(PG_URL, topic_prefix=unique("okr"), schema=unique("okr"), keys=50)
    migrate(PG_URL, workload.ref)
    workload.setup()
    yield workload
    workload.drop()


def _relays(workload: OrdersWorkload, broker: str, tmp_path: Path, n: int = 3) -> list[RelayProcess]:
    assert workload.schema is not None
    return [
        RelayProcess(
            PG_URL,
            broker,
            "--schema",
            workload.schema,
            "--lease-ttl",
            TTL,
            "--poll-interval",
            "0.2",
            log_path=str(tmp_path / f"relay{i}.log"),
        )
        for i in range(n)
    ]


def _writers(workload: OrdersWorkload, stop: threading.Event) -> list[threading.Thread]:
    def pace(_: int) -> None:
        stop.wait(0.004)

    threads = [
        threading.Thread(
            target=workload.write,
            args=(10**9,),
            kwargs={"seed": i, "stop": stop, "on_commit": pace, "survive_outages": True},
            daemon=True,
        )
        for i in range(3)
    ]
    for t in threads:
        t.start()
    return threads


async def _verify(workload: OrdersWorkload, stream: Stream) -> None:
    committed = await asyncio.to_thread(workload.committed)
    got = await read_all(stream.url, stream.name, expect=len(committed), timeout=120)
    result = tally(committed, [Delivery(m.event_id, m.key, None) for m in got])
    print(result.as_dict())
    assert result.committed > 300
    assert result.lost == 0, result
    assert result.phantom == 0, result
    assert result.order_violations == 0, result


async def _wait_drained(workload: OrdersWorkload, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {workload.ref.qualified} WHERE delivered_at IS NULL".encode()
            ).fetchone()
        if row is not None and row[0] == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("outbox not drained")


@pytest.mark.slow
async def test_one_of_three_relays_sigkilled_again_and_again(
    pg_orders: OrdersWorkload, nats_url: str, tmp_path: Path
) -> None:
    stream = await make_stream(nats_url, pg_orders.topic.split(".")[0])
    relays = _relays(pg_orders, nats_url, tmp_path)
    rng = random.Random(11)
    stop = threading.Event()
    try:
        for r in relays:
            r.start()
        writers = _writers(pg_orders, stop)
        for _ in range(12):
            await asyncio.sleep(rng.uniform(0.5, 1.2))
            victim = rng.choice(relays)
            victim.kill()
            await asyncio.sleep(0.1)
            victim.start()
        stop.set()
        for w in writers:
            w.join()
        await _wait_drained(pg_orders)
        assert sum(r.kills for r in relays) == 12
        for r in relays:
            assert r.stop() == 0
        await _verify(pg_orders, stream)
    finally:
        stop.set()
        for r in relays:
            r.kill()
        await drop_stream(stream)


@pytest.mark.slow
async def test_relay_paused_past_its_lease_is_fenced(pg_orders: OrdersWorkload, nats_url: str, tmp_path: Path) -> None:
    """SIGSTOP a relay for longer than its lease, SIGCONT it: the others took its buckets; its late
    confirmations are fenced, and nothing is lost or reordered."""
    stream = await make_stream(nats_url, pg_orders.topic.split(".")[0])
    relays = _relays(pg_orders, nats_url, tmp_path)
    stop = threading.Event()
    try:
        for r in relays:
            r.start()
        writers = _writers(pg_orders, stop)
        for i in range(4):
            await asyncio.sleep(1.0)
            victim = relays[i % 3]
            assert victim.proc is not None
            os.kill(victim.proc.pid, signal.SIGSTOP)
            await asyncio.sleep(float(TTL) * 2)
            os.kill(victim.proc.pid, signal.SIGCONT)
        stop.set()
        for w in writers:
            w.join()
        await _wait_drained(pg_orders)
        for r in relays:
            assert r.stop() == 0
        await _verify(pg_orders, stream)
        logs = "".join((tmp_path / f"relay{i}.log").read_text() for i in range(3))
        assert "buckets taken over" in logs
    finally:
        stop.set()
        for r in relays:
            r.kill()
        await drop_stream(stream)


async def test_dead_relays_buckets_move_within_bounded_time(
    pg_orders: OrdersWorkload, nats_url: str, tmp_path: Path
) -> None:
    relays = _relays(pg_orders, nats_url, tmp_path, n=2)
    stream = await make_stream(nats_url, pg_orders.topic.split(".")[0])
    leases = pg_orders.ref.derived("leases")

    def owners() -> dict[str, int]:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT owner, count(*) FROM {leases} WHERE expires_at > now() GROUP BY owner".encode()
            ).fetchall()
        return {str(o): int(c) for o, c in rows}

    try:
        for r in relays:
            r.start()
        deadline = time.monotonic() + 30
        while len(owners()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(owners()) == 2, "both relays hold buckets"
        relays[0].kill()
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < 30:
            current = owners()
            if len(current) == 1 and sum(current.values()) == BUCKETS:
                break
            await asyncio.sleep(0.1)
        took = time.monotonic() - killed_at
        print(f"hand-over took {took:.1f}s with a {TTL}s lease")
        assert list(owners().values()) == [BUCKETS]
        assert took <= float(TTL) * 3, "a dead relay's buckets move within about 1.33 x the lease TTL"
        assert relays[1].stop() == 0
    finally:
        for r in relays:
            r.kill()
        await drop_stream(stream)
