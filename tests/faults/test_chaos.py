"""Issue 4's fault mix on three relays: SIGKILL, SIGSTOP past the lease, NATS restart, PostgreSQL
restart, network cut — 30 faults from a seed, then 0 lost, 0 phantom, 0 per-key order violations
among first deliveries, and every relay exits 0 on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import pytest

from outboxkit.testing.chaos import KINDS, ChaosOptions, run_chaos


@pytest.mark.slow
def test_thirty_mixed_faults_on_three_relays(tmp_path: Path) -> None:
    pytest.importorskip("pgserver")
    result = run_chaos(ChaosOptions(faults=30, seed=20261126, workdir=str(tmp_path)), progress=print)
    print(result.tally.as_dict(), dict(result.faults), f"{result.elapsed:.1f}s")
    assert sum(result.faults.values()) == 30
    assert set(result.faults) == set(KINDS), "every kind of fault was injected"
    assert result.tally.committed > 300
    assert result.tally.lost == 0
    assert result.tally.phantom == 0
    assert result.tally.order_violations == 0
    assert result.relay_exits == [0, 0, 0]
