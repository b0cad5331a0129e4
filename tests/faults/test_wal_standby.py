"""One reader per slot (H6 for log tailing): a standby relay takes over from a relay that was
SIGSTOPped for longer than the takeover time, and the stopped relay, resumed, publishes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.wal import drop_slot, migrate_wal, resolve_slot
from outboxkit.testing.servers import RelayProcess
from tests.conftest import Stream
from tests.helpers import emit_many, read_all


@pytest.fixture
def wal_ref(pg_url: str, pg_ref: TableRef) -> Iterator[TableRef]:
    migrate_wal(pg_url, pg_ref)
    yield pg_ref
    drop_slot(pg_url, pg_ref, resolve_slot(pg_url, pg_ref))


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def wait_for_line(path: Path, text: str, count: int = 1, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await asyncio.to_thread(_text, path)).count(text) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path.name}: {text!r} x{count} not seen in {timeout}s:\n{_text(path)}")


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
async def test_standby_takes_over_from_a_stopped_relay_which_then_publishes_nothing(
    pg_url: str, wal_ref: TableRef, nats_stream: Stream, tmp_path: Path
) -> None:
    topic = nats_stream.topic("orders")
    args = ["--schema", wal_ref.schema or "", "--capture", "wal", "--lease-ttl", "2", "--poll-interval", "0.1"]
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = RelayProcess(pg_url, nats_stream.url, *args, log_path=str(log_a)).start()
    b: RelayProcess | None = None
    try:
        await wait_for_line(log_a, "relay holds slot")
        b = RelayProcess(pg_url, nats_stream.url, *args, log_path=str(log_b)).start()
        await wait_for_line(log_b, "standing by")
        ids = emit_many(pg_url, wal_ref, topic, [{"i": i} for i in range(200)], key=lambda i: f"k{i % 10}")
        await read_all(nats_stream.url, nats_stream.name, expect=200, idle=0.2)

        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        ids += emit_many(pg_url, wal_ref, topic, [{"i": i} for i in range(200, 400)], key=lambda i: f"k{i % 10}")
        await wait_for_line(log_b, "relay holds slot")
        took = time.monotonic() - stopped
        await read_all(nats_stream.url, nats_stream.name, expect=400, idle=0.2)
        before = _text(log_a)
        os.kill(a.proc.pid, signal.SIGCONT)
        # Resumed: its session was ended by the server (idle_session_timeout), so it must stand by.
        await wait_for_line(log_a, "standing by")
        ids += emit_many(pg_url, wal_ref, topic, [{"i": i} for i in range(400, 500)], key=lambda i: f"k{i % 10}")
        got = await read_all(nats_stream.url, nats_stream.name, expect=500, idle=1.0)
        after = _text(log_a)[len(before) :]
        assert "relay holds slot" not in after, after
        assert a.stop() == 0 and b.stop() == 0
    finally:
        for relay in (a, b):
            if relay is not None and relay.proc is not None and relay.alive():
                os.kill(relay.proc.pid, signal.SIGCONT)
                relay.kill()
    stopped_summary = _text(log_a).strip().splitlines()[-1]
    published_by_a = int(stopped_summary.split("relay stopped: ")[1].split()[0])
    assert published_by_a == 200, stopped_summary  # the first 200, nothing after the takeover
    assert took < 8, f"standby took {took:.1f}s to take over (takeover time 2 s)"
    firsts: dict[str, list[int]] = {}
    seen: set[str] = set()
    for m in got:
        if m.event_id not in seen:
            seen.add(m.event_id)
            firsts.setdefault(m.key or "", []).append(json.loads(m.payload)["i"])
    assert seen == set(ids)
    assert all(v == sorted(v) for v in firsts.values())
