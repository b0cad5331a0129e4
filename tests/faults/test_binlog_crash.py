"""Crash, tailing the MariaDB binlog: 5,000 events from 4 writers over 100 keys, a tenth of the
transactions rolled back, the ``relay --capture binlog`` process SIGKILLed 5 times at random
moments and restarted from the position it stored. Nothing lost, nothing rolled back published,
no key reordered; SIGTERM at the end exits 0."""

from __future__ import annotations

import pytest
from rich.console import Console

from outboxkit.lab.demo import DemoOptions, run_demo
from tests.conftest import MARIADB_URL, NATS_URL, require


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
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
