"""The fault mix on three relays: SIGKILL, SIGSTOP past the lease, NATS restart, PostgreSQL restart,
network cut, bad data (rows another program wrote that cannot become messages) — 30 faults from a
seed, then 0 lost, 0 phantom, 0 per-key order violations among first deliveries, every bad row a
dead letter with its reason, and every relay exits 0 on SIGTERM."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from outboxkit.testing.chaos import KINDS, ChaosOptions, run_chaos


@pytest.mark.slow
def test_thirty_mixed_faults_on_three_relays() -> None:
    pytest.importorskip("pgserver")
    # Outside pytest's tmp tree: the private PostgreSQL runs as another system user, and pytest
    # resets the permissions of its own tree when another session starts.
    workdir = tempfile.mkdtemp(prefix="outboxkit-chaos-")
    try:
        result = run_chaos(ChaosOptions(faults=30, seed=20261126, workdir=workdir), progress=print)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(result.tally.as_dict(), dict(result.faults), f"{result.elapsed:.1f}s", result.bad_rows, result.bad_dead)
    assert sum(result.faults.values()) == 30
    assert set(result.faults) == set(KINDS), "every kind of fault was injected"
    assert result.tally.committed > 300
    assert result.tally.lost == 0
    assert result.tally.phantom == 0
    assert result.tally.order_violations == 0
    assert result.relay_exits == [0, 0, 0]
    assert result.bad_rows > 0 and result.bad_dead == result.bad_rows, "every bad row is a dead letter with a reason"
