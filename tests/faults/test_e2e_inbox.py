"""End to end, effectively once: writers commit events while the relay AND the consumer are each
SIGKILLed repeatedly and restarted; at the end the consumer's side-effect table holds exactly one
row per committed event and none for rolled-back ones (G1, G2, G7)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from outboxkit import migrate
from outboxkit.inbox import migrate_inbox
from outboxkit.inbox.schema import connect_sync
from outboxkit.testing import RelayProcess
from outboxkit.testing.workload import OrdersWorkload
from tests.conftest import NATS_URL, drop_stream, make_stream, require, unique
from tests.e2e_handler import setup_side_effects

ROOT = Path(__file__).resolve().parents[2]


class ConsumerProcess:
    """``outboxkit consume`` as a child process, to be SIGKILLed and restarted."""

    def __init__(self, broker: str, db: str, group: str, topic: str, log_path: Path) -> None:
        self.args = [
            sys.executable, "-m", "outboxkit", "consume", "--broker", broker, "--db", db,
            "--handler", "tests.e2e_handler:record", "--group", group, "--topic", topic,
        ]  # fmt: skip
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def ensure_running(self) -> None:
        """A consumer started while its broker was briefly unreachable exits by design: restart it."""
        if self.proc is not None and self.proc.poll() is not None and self.proc.returncode != -9:
            self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.kills += 1

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        return int(self.proc.returncode)


def side_effects(db: str) -> Counter[str]:
    conn = connect_sync(db)
    try:
        return Counter(r[0] for r in conn.execute("SELECT event_id FROM side_effects").fetchall())
    finally:
        conn.close()


@dataclass
class Bus:
    relay_url: str  # the relay's broker URL
    consumer_url: str  # the consumer's (may carry consumer options)
    cleanup: Callable[[], Awaitable[None]]


@asynccontextmanager
async def bus_for(name: str, prefix: str, group: str, tmp_path: Path) -> AsyncIterator[Bus]:
    """The bus under test with everything named for this test, removed afterwards."""
    if name == "nats":
        require("NATS", "127.0.0.1", 4222)
        stream = await make_stream(NATS_URL, prefix)
        yield Bus(NATS_URL, f"{NATS_URL}?ack_wait=2", lambda: drop_stream(stream))
        await drop_stream(stream)
    elif name == "rabbitmq":
        require("RabbitMQ", "127.0.0.1", 5672)
        url = f"amqp://guest:guest@127.0.0.1:5672/?exchange={prefix}"
        yield Bus(url, url, _noop)
        import aio_pika

        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with conn:
            channel = await conn.channel()
            await channel.queue_delete(group)
            await channel.exchange_delete(prefix)
    elif name == "kafka":
        from outboxkit.testing.kafka_server import TansuServer

        with TansuServer() as tansu:
            yield Bus(tansu.url, f"{tansu.url}?assign=true", _noop)
    elif name == "redis":
        require("Redis", "127.0.0.1", 6379)
        url = "redis://127.0.0.1:6379/0"
        yield Bus(url, f"{url}?claim_idle=2", _noop)
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        await client.delete(f"{prefix}.created")
        await client.aclose()
    elif name == "mqtt":
        # A private Mosquitto: the shared one drops QoS 1 messages past 1,000 per offline session,
        # and the consumer is offline while it is SIGKILLed.
        from outboxkit.testing.mqtt_server import MosquittoServer

        with MosquittoServer(str(tmp_path / "mosquitto")) as server:
            yield Bus(server.url, server.url, _noop)
    else:
        raise ValueError(name)


async def _noop() -> None:
    return None


@pytest.mark.parametrize("bus", ["nats", "rabbitmq", "kafka", "redis", "mqtt"])
async def test_relay_and_consumer_sigkilled_effectively_once(tmp_path: Path, bus: str) -> None:
    rng = random.Random(7)
    producer_db = f"sqlite:///{tmp_path}/producer.db"
    consumer_db = f"sqlite:///{tmp_path}/consumer.db"
    prefix, group = unique("oke"), unique("e2e")
    async with bus_for(bus, prefix, group, tmp_path) as target:
        workload = OrdersWorkload(producer_db, topic_prefix=prefix, keys=20)
        migrate(producer_db)
        workload.setup()
        migrate_inbox(consumer_db)
        conn = connect_sync(consumer_db)
        setup_side_effects(conn)
        conn.close()
        consumer = ConsumerProcess(target.consumer_url, consumer_db, group, workload.topic, tmp_path / "consumer.log")
        relay = RelayProcess(
            producer_db, target.relay_url, "--poll-interval", "0.2", log_path=str(tmp_path / "relay.log")
        )
        consumer.start()
        await asyncio.sleep(2.0)  # the consumer creates its durable subscription before anything is published
        relay.start()
        stop = threading.Event()

        def pace(_: int) -> None:
            stop.wait(0.003)

        writers = [
            threading.Thread(
                target=workload.write, args=(10**9,), kwargs={"seed": i, "stop": stop, "on_commit": pace}, daemon=True
            )
            for i in range(2)
        ]
        try:
            for w in writers:
                w.start()
            for _ in range(12):  # 6 kills each, alternating
                await asyncio.sleep(rng.uniform(0.4, 0.9))
                victim = relay if relay.kills <= consumer.kills else consumer
                victim.kill()
                await asyncio.sleep(0.2)
                victim.start()
            stop.set()
            for w in writers:
                w.join()
            committed = workload.committed()
            deadline = asyncio.get_running_loop().time() + 120
            while asyncio.get_running_loop().time() < deadline:
                consumer.ensure_running()
                if set(side_effects(consumer_db)) >= committed.keys():
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(3.0)  # redeliveries would show up as duplicates now
            assert relay.stop() == 0
            assert consumer.stop() == 0
        finally:
            stop.set()
            relay.kill()
            consumer.kill()
        effects = side_effects(consumer_db)
        print(
            f"{bus}: committed={len(committed)} rolled_back={len(workload.stats.rolled_back_ids)} "
            f"effects={sum(effects.values())} relay_kills={relay.kills} consumer_kills={consumer.kills}"
        )
        assert relay.kills >= 6 and consumer.kills >= 6
        assert len(committed) > 300
        missing = committed.keys() - effects.keys()
        assert not missing, f"{len(missing)} committed events never processed"
        phantom = effects.keys() - committed.keys()
        assert not phantom, f"{len(phantom)} side effects for events that never committed"
        repeated = {k: v for k, v in effects.items() if v > 1}
        assert not repeated, f"side effects repeated: {list(repeated.items())[:5]}"
