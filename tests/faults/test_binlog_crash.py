"""Crash, tailing the MariaDB binlog: 5,000 events from 4 writers over 100 keys, a tenth of the
transactions rolled back, the ``relay --capture binlog`` process SIGKILLed 5 times at random
moments and restarted from the position it stored. Nothing lost, nothing rolled back published,
no key reordered; SIGTERM at the end exits 0. And one reader at a time: a relay SIGSTOPped past
the takeover time loses its lock to a standby and, resumed, publishes nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from rich.console import Console

from outboxkit.lab.demo import DemoOptions, run_demo
from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb.binlogpos import migrate_binlog
from outboxkit.testing.servers import RelayProcess
from tests.conftest import MARIADB_URL, NATS_URL, Stream, require
from tests.faults.test_wal_standby import _text, wait_for_line
from tests.helpers import emit_many, read_all


@pytest.mark.slow
@pytest.mark.xdist_group("binlog")
def test_binlog_relay_sigkilled_five_times_loses_nothing() -> None:
    require("MariaDB", "127.0.0.1", 3306)
    require("NATS", "127.0.0.1", 4222)
    console = Console(force_terminal=False, width=120)
    result = run_demo(
        DemoOptions(
            events=5_000,
            writers=4,
            kills=5,
            db=MARIADB_URL,
            broker=NATS_URL,
            seed=20261207,
            rate=800.0,
            capture="binlog",
        ),
        console,
    )
    t = result.tally
    print(f"binlog: {t.as_dict()} kills={result.kills} elapsed={result.elapsed:.1f}s")
    assert result.kills >= 5
    assert t.committed >= 5_000
    assert t.lost == 0, f"lost {t.lost}"
    assert t.phantom == 0, f"phantom {t.phantom}"
    assert t.order_violations == 0, f"{t.order_violations} per-key order violations"
    assert result.relay_exit == 0, "SIGTERM must let the relay finish its batch and exit 0"


@pytest.mark.slow
@pytest.mark.xdist_group("binlog")
async def test_binlog_standby_takes_over_from_a_stopped_relay_which_then_publishes_nothing(
    mariadb_url: str, mariadb_ref: TableRef, nats_stream: Stream, tmp_path: Path
) -> None:
    migrate_binlog(mariadb_url, mariadb_ref)
    ref = mariadb_ref
    topic = nats_stream.topic("orders")
    args = ["--schema", ref.schema or "", "--capture", "binlog", "--lease-ttl", "2", "--poll-interval", "0.1"]
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = RelayProcess(mariadb_url, nats_stream.url, *args, log_path=str(log_a)).start()
    b: RelayProcess | None = None
    try:
        await wait_for_line(log_a, "relay holds slot")
        b = RelayProcess(mariadb_url, nats_stream.url, *args, log_path=str(log_b)).start()
        await wait_for_line(log_b, "standing by")
        ids = emit_many(mariadb_url, ref, topic, [{"i": i} for i in range(200)], key=lambda i: f"k{i % 10}")
        await read_all(nats_stream.url, nats_stream.name, expect=200, idle=0.2)

        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        ids += emit_many(mariadb_url, ref, topic, [{"i": i} for i in range(200, 400)], key=lambda i: f"k{i % 10}")
        await wait_for_line(log_b, "relay holds slot")
        took = time.monotonic() - stopped
        await read_all(nats_stream.url, nats_stream.name, expect=400, idle=0.2)
        before = _text(log_a)
        os.kill(a.proc.pid, signal.SIGCONT)
        # Resumed: the server ended its session (wait_timeout), so its lock is gone: it stands by.
        await wait_for_line(log_a, "standing by")
        ids += emit_many(mariadb_url, ref, topic, [{"i": i} for i in range(400, 500)], key=lambda i: f"k{i % 10}")
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
