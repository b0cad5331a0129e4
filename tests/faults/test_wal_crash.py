"""Crash, tailing the log: 20,000 events from 4 writers over 100 keys, a tenth of the transactions
rolled back, the ``relay --capture wal`` process SIGKILLed 10 times at random moments and restarted;
events written as outbox rows (``wal``) or table-less (``wal-message``).

The workload numbers each key's events in its transactions' commit order (a row lock on the key),
so a per-key order violation here is a commit-order violation."""

from __future__ import annotations

import pytest
from rich.console import Console

from outboxkit.lab.demo import DemoOptions, run_demo
from tests.conftest import NATS_URL, PG_URL, require


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
@pytest.mark.parametrize("capture", ["wal", "wal-message"])
def test_wal_relay_sigkilled_ten_times_loses_nothing(capture: str) -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    require("NATS", "127.0.0.1", 4222)
    console = Console(force_terminal=False, width=120)
    result = run_demo(
        DemoOptions(
            events=20_000, writers=4, kills=10, db=PG_URL, broker=NATS_URL, seed=20261207, rate=2500.0, capture=capture
        ),
        console,
    )
    t = result.tally
    print(f"{capture}: {t.as_dict()} kills={result.kills} elapsed={result.elapsed:.1f}s")
    assert result.kills >= 10
    assert t.committed >= 20_000
    assert t.lost == 0, f"lost {t.lost}"
    assert t.phantom == 0, f"phantom {t.phantom}"
    assert t.order_violations == 0, f"{t.order_violations} per-key order violations"
    assert result.relay_exit == 0, "SIGTERM must let the relay finish its batch and exit 0"
