"""The fleet from the command line, in real processes: two ``outboxkit relay --fleet`` share the
outboxes through their leases and a SIGKILLed one's outboxes move to the other; ``status --fleet``
and ``migrate --fleet``; a bad fleet file fails at start-up in one line naming the entry."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from outboxkit.stores.base import BUCKETS, TableRef
from tests.conftest import PG_URL, Stream, unique
from tests.helpers import emit_many, read_all
from tests.integration.fleetsupport import (
    outboxes_made,
    pending_of,
    pg_outbox,
    public,
    ref_of,
    sqlite_outbox,
    wait_until,
    write_fleet,
)

CLI = [sys.executable, "-m", "outboxkit"]
pytestmark = [pytest.mark.postgres, pytest.mark.nats, pytest.mark.xdist_group("workers")]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}


def holders(entry: dict[str, object]) -> Counter[str]:
    """Owner -> buckets it holds now (unexpired) in this outbox."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT owner, count(*) FROM {ref_of(entry).derived('leases')}"
            " WHERE owner IS NOT NULL AND expires_at > now() GROUP BY owner".encode()
        ).fetchall()
    return Counter({str(owner): int(n) for owner, n in rows})


class FleetProcess:
    def __init__(self, path: Path, owner: str, log: Path) -> None:
        self.log = log
        args = [*CLI, "-v", "relay", "--fleet", str(path), "--owner", owner, "--summary-interval", "0"]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=_env())

    def text(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None


async def test_two_fleets_share_and_a_killed_ones_outboxes_move(nats_stream: Stream, tmp_path: Path) -> None:
    s = nats_stream
    entries = [pg_outbox(f"t{i}", s.prefix) for i in range(3)]
    path = tmp_path / "fleet.toml"
    with outboxes_made(entries):
        write_fleet(path, public(entries), broker=s.url, lease_ttl=2.0, poll_interval=0.5)
        one = FleetProcess(path, "fleet-one", tmp_path / "one.log")
        two = FleetProcess(path, "fleet-two", tmp_path / "two.log")
        try:
            await wait_until(
                "both fleets holding buckets of every outbox",
                lambda: all(set(holders(e)) == {"fleet-one", "fleet-two"} for e in entries),
            )
            for entry in entries:
                emit_many(entry["db"], ref_of(entry), "orders.created", list(range(30)), key=lambda i: f"k{i % 4}")
            await wait_until("the first events drained", lambda: all(pending_of(e) == 0 for e in entries))
            os.kill(one.proc.pid, signal.SIGKILL)
            one.proc.wait()
            for entry in entries:
                emit_many(entry["db"], ref_of(entry), "orders.created", list(range(30)), key=lambda i: f"k{i % 4}")
            # Within the lease time the survivor holds every bucket of every outbox and drains them.
            await wait_until(
                "fleet-two holding everything", lambda: all(holders(e) == {"fleet-two": BUCKETS} for e in entries)
            )
            await wait_until("all drained by the survivor", lambda: all(pending_of(e) == 0 for e in entries))
            assert two.alive(), two.text()
            status = await asyncio.to_thread(
                subprocess.run,
                [*CLI, "status", "--fleet", str(path), "--json"],
                capture_output=True,
                text=True,
                env=_env(),
            )
            assert status.returncode == 0, status.stderr
            doc = json.loads(status.stdout)
            assert [o["tenant"] for o in doc["outboxes"]] == ["t0", "t1", "t2"]
            for outbox in doc["outboxes"]:
                assert outbox["ok"] and outbox["pending"] == 0 and outbox["dead"] == 0
                assert outbox["owners"] == ["fleet-two"]
            two.proc.send_signal(signal.SIGTERM)
            assert two.proc.wait(60) == 0, two.text()
            assert all(not holders(e) for e in entries)  # released on a clean stop
        finally:
            for p in (one, two):
                if p.alive():
                    p.proc.kill()
                    p.proc.wait()
        got = await read_all(s.url, s.name, expect=180)
        assert len({m.event_id for m in got}) == 180  # none lost (copies allowed: at-least-once)


def test_migrate_and_status_over_a_fleet(tmp_path: Path) -> None:
    """``migrate --fleet`` migrates every outbox (twice: idempotent), reporting each;
    ``status --fleet`` shows one that cannot be read without hiding the others."""
    schema = unique("okf")
    entries = [
        {"tenant": "pg", "db": PG_URL, "schema": schema},
        {"tenant": "lite", "db": f"sqlite:///{tmp_path}/lite.db"},
    ]
    path = tmp_path / "fleet.toml"
    write_fleet(path, entries, broker="nats://127.0.0.1:4222")
    try:
        for _ in range(2):
            out = subprocess.run([*CLI, "migrate", "--fleet", str(path)], capture_output=True, text=True, env=_env())
            assert out.returncode == 0, out.stderr
            assert "migrated pg" in out.stderr and "migrated lite" in out.stderr
            assert "2 of 2 outboxes migrated" in out.stderr
        emit_many(PG_URL, TableRef("outbox", schema), "orders.created", [1, 2, 3])
        broken = [*entries, {"tenant": "nope", "db": PG_URL, "schema": unique("okf")}]
        write_fleet(path, broken, broker="nats://127.0.0.1:4222")
        out = subprocess.run(
            [*CLI, "status", "--fleet", str(path), "--json"], capture_output=True, text=True, env=_env()
        )
        assert out.returncode == 1
        doc = {o["tenant"]: o for o in json.loads(out.stdout)["outboxes"]}
        assert doc["pg"]["ok"] and doc["pg"]["pending"] == 3
        assert doc["lite"]["ok"] and doc["lite"]["pending"] == 0
        assert not doc["nope"]["ok"] and doc["nope"]["error"]
        text = subprocess.run([*CLI, "status", "--fleet", str(path)], capture_output=True, text=True, env=_env())
        assert "UNREACHABLE" in text.stdout and "pg" in text.stdout
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def test_a_bad_fleet_file_fails_at_start_up_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    entries = [
        {"tenant": "a", "db": f"sqlite:///{tmp_path}/a.db"},
        {"tenant": "b", "db": "sqlite:///x.db", "weight": 0},
    ]
    write_fleet(path, entries, broker="nats://127.0.0.1:4222")
    out = subprocess.run([*CLI, "relay", "--fleet", str(path)], capture_output=True, text=True, env=_env(), timeout=60)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "#2 (tenant 'b')" in lines[0] and "weight" in lines[0]


async def test_sqlite_only_fleet_in_a_subprocess(nats_stream: Stream, tmp_path: Path) -> None:
    """A fleet with no PostgreSQL at all never imports the pool; SIGTERM stops it with exit 0."""
    s = nats_stream
    entries = [sqlite_outbox(f"s{i}", s.prefix, tmp_path) for i in range(3)]
    path = tmp_path / "fleet.toml"
    write_fleet(path, public(entries), broker=s.url, poll_interval=0.5)
    proc = FleetProcess(path, "fleet-lite", tmp_path / "lite.log")
    try:
        for entry in entries:
            emit_many(entry["db"], ref_of(entry), "orders.created", list(range(10)))
        await wait_until("drained", lambda: all(pending_of(e) == 0 for e in entries))
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(60) == 0, proc.text()
    finally:
        if proc.alive():
            proc.proc.kill()
            proc.proc.wait()
    got = await read_all(s.url, s.name, expect=30)
    assert len({m.event_id for m in got}) == 30
