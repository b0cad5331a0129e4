"""The writer subprocess: one service instance running a strategy's transactions.

It runs as its own process so a crash point can be exact: at the scheduled point it SIGKILLs
itself (no ``finally``, no flush, no goodbye), exactly like an OOM kill. Faults that need the
runner (broker restart, connections killed, relay SIGKILL) are requested on stdout as
``FAULT <kind>`` and the writer waits for a line on stdin saying the fault has happened.

Run by the runner as ``python -m outboxkit.lab.writer '<json spec>'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from outboxkit.brokers.nats import NatsPublisher
from outboxkit.core.envelope import OutboxEvent
from outboxkit.emit import Outbox
from outboxkit.errors import DeliveryError, UnavailableError
from outboxkit.lab.faults import Scheduled, Txn, plan
from outboxkit.lab.strategies import STRATEGIES
from outboxkit.lab.strategy import Env
from outboxkit.stores.database import placeholders
from outboxkit.testing.workload import OrdersWorkload


@dataclass(frozen=True)
class WriterSpec:
    env: Env
    strategy: str
    events: int
    seed: int
    start: int  # first transaction index of this segment
    faults: list[Scheduled]
    stats_path: str
    rollback_ratio: float
    rate: float = 0.0  # transactions per second (0: as fast as it can); a service has a request rate

    def to_json(self) -> str:
        data: dict[str, Any] = {**self.__dict__, "env": self.env.__dict__, "faults": [f.as_dict() for f in self.faults]}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> WriterSpec:
        data = json.loads(text)
        data["env"] = Env(**data["env"])
        data["faults"] = [Scheduled(f["tx"], f["kind"], f["point"]) for f in data["faults"]]
        return cls(**data)


class Context:
    """The ``WriteContext`` of the lab writer."""

    def __init__(self, spec: WriterSpec, publisher: NatsPublisher) -> None:
        self.spec = spec
        self.env = spec.env
        self.workload = OrdersWorkload(self.env.db, schema=self.env.schema)
        self.conn: Any = self._connect()
        self.outbox = Outbox(schema=self.env.schema, source="/outboxkit/lab")
        self.publisher = publisher
        self.fault: Scheduled | None = None  # the fault of the current transaction, until it fired
        self.stats = open(spec.stats_path, "a", buffering=1)  # noqa: SIM115 - line-buffered, closed at exit

    def _connect(self) -> Any:
        # A label the runner can find when the fault is "database connections killed".
        return self.workload.connect(label=f"outboxkit-lab-{self.env.schema}")

    def sql(self, text: str) -> str:
        return placeholders(self.env.database, text)

    def reconnect(self) -> None:
        with contextlib.suppress(Exception):  # it is already broken; a new one follows
            self.conn.close()
        self.conn = self._connect()

    async def at(self, point: str) -> None:
        if self.fault is not None and self.fault.point == point:
            await self.fire()

    async def fire(self) -> None:
        fault, self.fault = self.fault, None
        assert fault is not None
        # When it happened, for the recovery measurement (lab.recovery).
        self.stats.write(json.dumps({"fault": fault.kind, "tx": fault.tx, "at": time.time()}) + "\n")
        if fault.crash:
            self.stats.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        # Ask the runner, then wait until it says the fault has happened.
        await _ask_runner(f"FAULT {fault.kind}")

    def committed(self, txn: Txn, ids: Sequence[str]) -> None:
        self.stats.write(json.dumps({"commit": time.time(), "tx": txn.index, "ids": list(ids)}) + "\n")

    async def publish(self, events: Sequence[OutboxEvent]) -> bool:
        if not events:
            return True
        futures = [await self.publisher.publish(e) for e in events]
        ok = True
        for fut in futures:
            try:
                await fut
            except DeliveryError as exc:
                ok = False
                self.stats.write(json.dumps({"publish_failed": str(exc)}) + "\n")
        return ok


async def run(spec: WriterSpec) -> None:
    strategy = STRATEGIES[spec.strategy]
    publisher = NatsPublisher(spec.env.broker, source="/outboxkit/lab", ack_timeout=5.0)
    await _connect(publisher)
    ctx = Context(spec, publisher)
    faults = {f.tx: f for f in spec.faults}
    await strategy.recover(ctx)
    next_at = time.monotonic()
    for txn in plan(spec.events, spec.seed, rollback_ratio=spec.rollback_ratio)[spec.start :]:
        if txn.index in faults:
            # Let the runner wait until everything committed so far is on the bus, so that each
            # fault's recovery is measured alone and not on top of the previous fault's.
            await _ask_runner("SETTLE")
            next_at = max(next_at, time.monotonic())
        if spec.rate:
            # Requests arrive at a steady rate; the wait is not counted as request time ("busy").
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += 1 / spec.rate
        ctx.fault = faults.get(txn.index)
        t0 = time.monotonic()
        await strategy.write(ctx, txn)
        if ctx.fault is not None:  # its point is not on this strategy's path: it happens at the end
            await ctx.fire()
        ctx.stats.write(json.dumps({"tx": txn.index, "busy": time.monotonic() - t0, "events": txn.events}) + "\n")
    await strategy.recover(ctx)  # a graceful stop finishes what is pending, as a shutdown hook would
    ctx.stats.close()
    ctx.conn.close()
    await publisher.close()


async def _ask_runner(request: str) -> None:
    """One line to the runner on stdout; returns when it answered on stdin."""
    sys.stdout.write(request + "\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def _connect(publisher: NatsPublisher, patience: float = 30.0) -> None:
    """A new instance may start while the broker is still down: retry, as a restart policy would."""
    deadline = time.monotonic() + patience
    while True:
        try:
            await publisher.connect()
            return
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    asyncio.run(run(WriterSpec.from_json(sys.argv[1])))
    sys.stdout.write("DONE\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
