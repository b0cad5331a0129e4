"""Crash: 20,000 events from 4 writers over 100 keys, a tenth of the transactions rolled back,
while the relay process is SIGKILLed at least 10 times at random moments and restarted.

The harness is the demo's (the main job): ground truth from the business tables, an independent
subscriber, the shared verifier."""

from __future__ import annotations

import pytest
from rich.console import Console

from outboxkit.lab.demo import DemoOptions, run_demo
from tests.conftest import NATS_URL, PG_URL, require


@pytest.mark.slow
@pytest.mark.parametrize("combo", ["sqlite+embedded-nats", "postgres+nats"])
def test_relay_sigkilled_ten_times_loses_nothing(combo: str) -> None:
    if combo.startswith("postgres"):
        require("PostgreSQL", "127.0.0.1", 5432)
        require("NATS", "127.0.0.1", 4222)
        db, broker = PG_URL, NATS_URL
    else:
        db = broker = None
    console = Console(force_terminal=False, width=120)
    result = run_demo(
        DemoOptions(events=20_000, writers=4, kills=10, db=db, broker=broker, seed=20261126, rate=2500.0),
        console,
    )
    t = result.tally
    print(f"{combo}: {t.as_dict()} kills={result.kills} elapsed={result.elapsed:.1f}s")
    assert result.kills >= 10
    assert t.committed >= 20_000
    assert t.lost == 0, f"lost {t.lost}"
    assert t.phantom == 0, f"phantom {t.phantom}"
    assert t.order_violations == 0, f"{t.order_violations} per-key order violations"
    assert result.relay_exit == 0, "SIGTERM must let the relay finish its batch and exit 0"
