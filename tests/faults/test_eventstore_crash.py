"""Crash: the relay and a projection runner, each a child process, SIGKILLed again and again while
4 writers append to 40 streams (2,000 transactions, about 3,000 events; a tenth rolled back).
Afterwards: every committed event is on the bus (G1), no rolled-back one (G2), each stream in version order (G5), and
the projection, which refuses a duplicate or a skipped version, equals a rebuild from scratch."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from outboxkit.errors import ConcurrencyError
from outboxkit.eventstore import EventStore, NewEvent, ProjectionRunner, migrate_event_store, projection_statuses
from outboxkit.stores.base import TableRef
from tests.conftest import NATS_URL, PG_URL, drop_stream, make_stream, require, unique
from tests.helpers import pending, read_all
from tests.integration.eventstore_support import Counts

KILLS_EACH = 5  # SIGKILLs of the relay and of the projection runner while appends go on

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("eventstore-crash")


class Child:
    """A child process to SIGKILL and restart."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
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


@pytest.mark.slow
async def test_relay_and_projection_sigkilled_during_appends(tmp_path: Path) -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    require("NATS", "127.0.0.1", 4222)
    ref = TableRef("events", unique("oke"))
    migrate_event_store(PG_URL, ref)
    stream = await make_stream(NATS_URL)
    store = EventStore(schema=ref.schema, topic=stream.topic("orders"))
    counts = Counts("counts", "postgres", ref.schema)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        counts.create(conn)
    relay = Child(
        [sys.executable, "-m", "outboxkit", "-q", "relay", "--db", PG_URL, "--broker", NATS_URL,
         "--table", "events", "--schema", str(ref.schema), "--poll-interval", "0.05"],
        tmp_path / "relay.log",
    )  # fmt: skip
    projector = Child(
        [sys.executable, "-m", "tests.faults.eventstore_projection_main", PG_URL, str(ref.schema)],
        tmp_path / "projection.log",
    )
    committed: set[str] = set()
    rolled_back: set[str] = set()
    lock = threading.Lock()
    per_writer, writers = 500, 4
    errors: list[BaseException] = []
    enough_kills = threading.Event()

    def writer(w: int) -> None:
        rng = random.Random(w)
        versions = {f"w{w}-s{s}": 0 for s in range(10)}
        try:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                # At least per_writer transactions, and on until the kills are done: a fast machine
                # must not finish appending before the relay and the projection were killed enough.
                done = 0
                while done < per_writer or not enough_kills.is_set():
                    done += 1
                    stream_id = rng.choice(list(versions))
                    k = rng.choice((1, 1, 1, 2, 3))
                    conn.execute("BEGIN")
                    try:
                        result = store.append(
                            conn, stream_id, [NewEvent("E", {"w": w}) for _ in range(k)], expected=versions[stream_id]
                        )
                    except ConcurrencyError:  # nobody else writes these streams
                        conn.execute("ROLLBACK")
                        raise
                    if rng.random() < 0.1:
                        conn.execute("ROLLBACK")
                        with lock:
                            rolled_back.update(result.ids)
                    else:
                        conn.execute("COMMIT")
                        versions[stream_id] = result.version
                        with lock:
                            committed.update(result.ids)
        except BaseException as exc:
            errors.append(exc)

    try:
        relay.start()
        projector.start()
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        rng = random.Random(7)
        turn = 0
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(rng.uniform(0.3, 0.8))
            victim = (relay, projector)[turn % 2]  # alternate, so each is killed as often
            turn += 1
            victim.kill()
            await asyncio.sleep(rng.uniform(0.1, 0.3))
            victim.start()
            if relay.kills >= KILLS_EACH and projector.kills >= KILLS_EACH:
                enough_kills.set()
        for t in threads:
            t.join()
        assert not errors, errors
        # After the last kill, both come back and drain.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = pending(PG_URL, ref) == 0 and all(s.backlog == 0 for s in projection_statuses(store, PG_URL))
            if done and projection_statuses(store, PG_URL):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"not drained: {pending(PG_URL, ref)} pending, {projection_statuses(store, PG_URL)}")
        assert relay.stop() == 0 and projector.stop() == 0
        print(f"relay kills={relay.kills} projection kills={projector.kills} committed={len(committed)}")
        assert relay.kills >= KILLS_EACH and projector.kills >= KILLS_EACH

        got = await read_all(stream.url, stream.name, expect=len(committed), idle=1.0)
        ids = {m.event_id for m in got}
        assert ids == committed, f"lost {len(committed - ids)}, phantom {len(ids - committed)}"
        assert not ids & rolled_back
        last: dict[str, int] = {}
        for m in got:  # per-stream order; a re-sent copy repeats a version, never goes back past it
            version = int(m.headers["ce-streamversion"])
            assert version >= last.get(m.key or "", 0), f"{m.key}: {version} after {last[m.key or '']}"
            last[m.key or ""] = max(version, last.get(m.key or "", 0))

        with psycopg.connect(PG_URL) as conn:
            projected = counts.state(conn)
            heads = dict(conn.execute(f"SELECT stream_id, version FROM {ref.derived('streams')}").fetchall())
        assert projected == {s: (v, v) for s, v in heads.items()}, "the projection saw every event once, in order"
        again = Counts("rebuilt", "postgres", ref.schema)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            again.create(conn)
        runner = ProjectionRunner(store, again, PG_URL, batch=1000)
        try:
            runner.rebuild()
        finally:
            runner.close()
        with psycopg.connect(PG_URL) as conn:
            assert again.state(conn) == projected, "projection state equals a rebuild from scratch"
    finally:
        relay.kill()
        projector.kill()
        await drop_stream(stream)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())
