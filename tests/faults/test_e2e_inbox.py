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
from pathlib import Path

from outboxkit import migrate
from outboxkit.inbox import migrate_inbox
from outboxkit.inbox.schema import connect_sync
from outboxkit.testing import RelayProcess
from outboxkit.testing.workload import OrdersWorkload
from tests.conftest import drop_stream, make_stream
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


async def test_nats_relay_and_consumer_sigkilled_effectively_once(tmp_path: Path, nats_url: str) -> None:
    rng = random.Random(7)
    producer_db = f"sqlite:///{tmp_path}/producer.db"
    consumer_db = f"sqlite:///{tmp_path}/consumer.db"
    stream = await make_stream(nats_url)
    try:
        workload = OrdersWorkload(producer_db, topic_prefix=stream.prefix, keys=20)
        migrate(producer_db)
        workload.setup()
        migrate_inbox(consumer_db)
        conn = connect_sync(consumer_db)
        setup_side_effects(conn)
        conn.close()
        broker = f"{nats_url}?ack_wait=2"
        consumer = ConsumerProcess(broker, consumer_db, "e2e", f"{stream.prefix}.>", tmp_path / "consumer.log")
        relay = RelayProcess(producer_db, nats_url, "--poll-interval", "0.2", log_path=str(tmp_path / "relay.log"))
        consumer.start()
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
        deadline = asyncio.get_running_loop().time() + 90
        while asyncio.get_running_loop().time() < deadline:
            if set(side_effects(consumer_db)) >= committed.keys():
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(3.0)  # redeliveries after ack_wait would show up as duplicates now
        assert relay.stop() == 0
        assert consumer.stop() == 0
        effects = side_effects(consumer_db)
        print(
            f"committed={len(committed)} rolled_back={len(workload.stats.rolled_back_ids)} "
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
    finally:
        await drop_stream(stream)
