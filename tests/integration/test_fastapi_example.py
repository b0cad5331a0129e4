"""examples/fastapi_orders end to end, as processes: the orders service under uvicorn, ``outboxkit
relay`` and the billing consumer (FastStream + the inbox), on the real PostgreSQL and NATS, driven
over HTTP with httpx. Every order posted is billed exactly once, also when the relay and the
consumer are SIGKILLed in between and restarted (G1, G7)."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from outboxkit.stores.base import TableRef
from tests.conftest import NATS_URL, PG_URL, drop_stream, require, unique
from tests.conftest import Stream as NatsStream
from tests.helpers import pending

pytestmark = [pytest.mark.xdist_group("fastapi_example"), pytest.mark.timeout(240)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_orders"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Services:
    """The three processes of the example, started and SIGKILLed at will, logs in ``logs``."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.port = _free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: collections.Counter[str] = collections.Counter()

    def command(self, name: str) -> list[str]:
        py = sys.executable
        return {
            "orders": [py, "-m", "uvicorn", "orders_service:app", "--host", "127.0.0.1", "--port", str(self.port)],
            "relay": [py, "-m", "outboxkit", "relay", "--poll-interval", "0.2", "--lease-ttl", "2"],
            "billing": [py, "billing_service.py"],
        }[name]

    def start(self, name: str) -> None:
        self.starts[name] += 1
        log = (self.logs / f"{name}-{self.starts[name]}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            self.command(name), cwd=EXAMPLE, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}-{self.starts[name]}.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def example_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    require("PostgreSQL", "127.0.0.1", 5432)
    require("NATS", "127.0.0.1", 4222)
    schema, prefix = unique("okx"), unique("okx")
    stream = NatsStream(NATS_URL, prefix.upper(), prefix)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
    env = {
        **os.environ,
        # Every process of the example works in this test's schema (libpq reads PGOPTIONS), so the
        # example's unqualified table names stay as written.
        "PGOPTIONS": f"-c search_path={schema}",
        "DATABASE_URL": PG_URL.replace("postgresql://", "postgresql+psycopg://"),
        "OUTBOXKIT_DB": PG_URL,
        "OUTBOXKIT_BROKER": NATS_URL,
        "NATS_URL": NATS_URL,
        "TOPIC_PREFIX": prefix,
        "NATS_STREAM": stream.name,
        "BILLING_ACK_WAIT": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env["_SCHEMA"] = schema
    yield env
    import asyncio

    asyncio.run(drop_stream(stream))
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _setup(env: dict[str, str]) -> None:
    """The README's set-up steps: the stream, the outbox and the inbox."""
    py = sys.executable
    prefix, stream = env["TOPIC_PREFIX"], env["NATS_STREAM"]
    for args in (
        ["provision", "--topic", f"{prefix}.>", "--stream", stream],
        ["migrate"],
        ["migrate", "--inbox"],
    ):
        done = subprocess.run([py, "-m", "outboxkit", *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def _rows(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={env['_SCHEMA']}") as conn:
        return list(conn.execute(sql.encode()).fetchall())


def _invoices(env: dict[str, str]) -> collections.Counter[int]:
    try:
        return collections.Counter(r[0] for r in _rows(env, "SELECT order_id FROM invoices"))
    except psycopg.errors.UndefinedTable:  # the billing service has not created it yet
        return collections.Counter()


def _wait(services: Services, what: str, predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        services.alive()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{services.tail(n)}" for n in services.procs)
            raise AssertionError(f"{what}: not within {timeout}s\n{logs}")
        time.sleep(0.1)


def test_every_order_is_billed_exactly_once_across_sigkills_of_the_relay_and_the_consumer(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    env = example_env
    _setup(env)
    services = Services(env, tmp_path)
    try:
        for name in ("orders", "relay", "billing"):
            services.start(name)
        base = f"http://127.0.0.1:{services.port}"
        with httpx.Client(base_url=base, timeout=10) as http:

            def ready() -> bool:
                try:
                    return http.get("/openapi.json").status_code == 200
                except httpx.TransportError:
                    return False

            _wait(services, "the orders service answers", ready)
            orders: list[int] = []

            def post(n: int, round_: int) -> None:
                for i in range(n):
                    reply = http.post("/orders", json={"customer": f"c{i % 3}", "amount_cents": 100 * round_ + i + 1})
                    assert reply.status_code == 201, reply.text
                    body = reply.json()
                    assert http.get(f"/orders/{body['id']}").json()["amount_cents"] == 100 * round_ + i + 1
                    orders.append(body["id"])

            # One order in, one invoice out.
            post(1, 0)
            _wait(services, "the first order is billed", lambda: _invoices(env) == {orders[0]: 1})

            # Orders keep coming; the relay and the consumer are SIGKILLed while they work on them
            # (some published and not yet marked, some billed and not yet acked), more orders come
            # in while they are down, then both restart and catch up.
            for round_ in range(1, 4):
                post(6, round_)
                services.kill("relay")
                services.kill("billing")
                post(3, round_)
                services.start("relay")
                services.start("billing")
                _wait(services, f"round {round_} billed", lambda: set(_invoices(env)) == set(orders), timeout=90)
            assert http.post("/orders", json={"customer": "", "amount_cents": 1}).status_code == 422

        _wait(services, "every order is billed", lambda: set(_invoices(env)) == set(orders), timeout=90)
        # Longer than the consumer's ack wait: a redelivery of something already billed would show now.
        time.sleep(3)
        invoices = _invoices(env)
        assert invoices == dict.fromkeys(orders, 1), "exactly one invoice per order"
        # Each invoice's follow-up event, emitted in the consumer's transaction, is in the outbox once.
        followups = _rows(env, f"SELECT key, topic FROM outbox WHERE topic = '{env['TOPIC_PREFIX']}.invoices.created'")
        assert len(followups) == len(orders)
        # The restarted relay published everything: the orders posted while it was dead, and the follow-ups.
        outbox = TableRef("outbox", env["_SCHEMA"])
        _wait(services, "the outbox is drained", lambda: pending(PG_URL, outbox) == 0)
        assert services.starts["relay"] == 4 and services.starts["billing"] == 4
    finally:
        services.stop_all()
