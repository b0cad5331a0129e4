"""G8 self-healing: NATS restarted, the relay's database connections killed, PostgreSQL restarted,
the network to the database cut. Writers keep committing throughout; nothing may be lost."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.brokers.nats import NatsPublisher
from outboxkit.core.tally import Delivery, tally
from outboxkit.relay import Relay, RelayConfig
from outboxkit.stores.postgres import PostgresOutboxStore
from outboxkit.testing import NatsServer, RelayProcess, TcpProxy
from outboxkit.testing.workload import OrdersWorkload, delivered_count
from tests.conftest import PG_URL, drop_stream, make_stream, require, unique
from tests.helpers import read_all, running_relay, wait_drained


def _start_writers(workload: OrdersWorkload, stop: threading.Event, writers: int = 3) -> list[threading.Thread]:
    def pace(_: int) -> None:
        stop.wait(0.004)

    threads = [
        threading.Thread(
            target=workload.write,
            args=(10**9,),
            kwargs={"seed": i, "stop": stop, "on_commit": pace, "survive_outages": True},
            daemon=True,
        )
        for i in range(writers)
    ]
    for t in threads:
        t.start()
    return threads


async def _verify(workload: OrdersWorkload, url: str, stream: str) -> None:
    committed = await asyncio.to_thread(workload.committed)
    got = await read_all(url, stream, expect=len(committed), timeout=90)
    result = tally(committed, [Delivery(m.event_id, m.key, None) for m in got])
    print(result.as_dict())
    assert result.committed > 200
    assert result.lost == 0 and result.phantom == 0 and result.order_violations == 0


async def test_nats_restarted_twice_mid_run(tmp_path: Path) -> None:
    with NatsServer(str(tmp_path / "nats")) as server:
        db = f"sqlite:///{tmp_path}/orders.db"
        prefix = unique("okf")
        workload = OrdersWorkload(db, topic_prefix=prefix)
        migrate(db)
        workload.setup()
        stream = await make_stream(server.url, prefix)
        stop = threading.Event()
        with RelayProcess(db, server.url, "--poll-interval", "0.1", log_path=str(tmp_path / "relay.log")) as relay:
            threads = _start_writers(workload, stop)
            # The relay must be up before the first restart: at start-up it fails fast by design.
            while delivered_count(workload) == 0:
                await asyncio.sleep(0.1)
            for _ in range(2):
                await asyncio.sleep(1.5)
                await asyncio.to_thread(server.restart, 1.0)
            await asyncio.sleep(1.0)
            stop.set()
            for t in threads:
                t.join()
            await wait_drained(db, workload.ref, timeout=60)
            assert relay.alive(), "the relay survives broker restarts by itself"
        log = (tmp_path / "relay.log").read_text()
        assert "Traceback" not in log
        assert log.count("connection lost") <= 4, "one line per outage, not one per retry"
        await _verify(workload, server.url, stream.name)


@pytest.fixture
def pg_workload(nats_url: str) -> Iterator[OrdersWorkload]:
    require("PostgreSQL", "127.0.0.1", 5432)
    workload = OrdersWorkload(PG_URL, topic_prefix=unique("okf"), schema=unique("okf"))
    migrate(PG_URL, workload.ref)
    workload.setup()
    yield workload
    workload.drop()


def _relay(db: str, broker: str, workload: OrdersWorkload, app: str) -> Relay:
    return Relay(
        lambda: PostgresOutboxStore(db, workload.ref, application_name=app),
        lambda: NatsPublisher(broker),
        RelayConfig(poll_interval=0.1, retry_cap=1.0),
    )


async def _run_with_faults(
    workload: OrdersWorkload, db: str, broker: str, fault: Callable[[], Any], faults: int = 3
) -> Relay:
    app = f"okf-{uuid.uuid4().hex[:8]}"
    relay = _relay(db, broker, workload, app)
    stop = threading.Event()
    async with running_relay(relay):
        threads = _start_writers(workload, stop)
        for _ in range(faults):
            await asyncio.sleep(1.0)
            await asyncio.to_thread(fault, app) if _takes_app(fault) else await asyncio.to_thread(fault)
        await asyncio.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        await wait_drained(db, workload.ref, timeout=60)
    return relay


def _takes_app(fn: Callable[..., Any]) -> bool:
    return fn.__code__.co_argcount == 1


async def test_relay_database_connections_terminated(pg_workload: OrdersWorkload, nats_url: str) -> None:
    stream = await make_stream(nats_url, pg_workload.topic.split(".")[0])
    killed: list[int] = []

    def terminate(app: str) -> None:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", [app]
            ).fetchall()
            killed.append(len(rows))

    try:
        await _run_with_faults(pg_workload, PG_URL, nats_url, terminate)
        assert sum(killed) >= 3, f"the relay's connections were terminated: {killed}"
        await _verify(pg_workload, nats_url, stream.name)
    finally:
        await drop_stream(stream)


async def test_network_to_database_cut_through_proxy(pg_workload: OrdersWorkload, nats_url: str) -> None:
    stream = await make_stream(nats_url, pg_workload.topic.split(".")[0])
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        cuts: list[int] = []

        def cut() -> None:
            cuts.append(proxy.cut())

        try:
            await _run_with_faults(pg_workload, proxied, nats_url, cut)
            assert sum(cuts) >= 3
            await _verify(pg_workload, nats_url, stream.name)
        finally:
            await drop_stream(stream)


async def test_postgresql_restarted_mid_run(tmp_path: Path, nats_url: str) -> None:
    pgserver = pytest.importorskip("pgserver")
    from pgserver._commands import pg_ctl

    server = pgserver.get_server(str(tmp_path / "pg"), cleanup_mode="delete")
    try:
        url = server.get_uri()
        workload = OrdersWorkload(url, topic_prefix=unique("okf"))
        migrate(url)
        workload.setup()
        stream = await make_stream(nats_url, workload.topic.split(".")[0])

        def restart() -> None:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
            server.ensure_postgres_running()

        try:
            relay = await _run_with_faults(workload, url, nats_url, restart, faults=2)
            assert relay.stats.published > 0
            await _verify(workload, nats_url, stream.name)
        finally:
            await drop_stream(stream)
    finally:
        server.cleanup()
