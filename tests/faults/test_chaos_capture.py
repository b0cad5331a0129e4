"""The chaos harness on the log-tailing relays: ``relay --capture wal`` on a private PostgreSQL and
``relay --capture binlog`` on a private MariaDB, three relays each (one reader, two standbys), twelve
seeded faults of every kind (SIGKILL, SIGSTOP past the takeover time, NATS restart, database restart,
network cut, bad data). Then 0 lost, 0 phantom, 0 per-key order violations among first deliveries,
every bad row a dead letter with its reason, every relay exits 0 on SIGTERM."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from outboxkit.testing.chaos import KINDS, ChaosOptions, run_chaos
from outboxkit.testing.chaosdb import mariadb_binaries


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
@pytest.mark.parametrize("capture", ["wal", "binlog"])
def test_twelve_mixed_faults_on_tailing_relays(capture: str) -> None:
    if capture == "wal":
        pytest.importorskip("pgserver")
    elif mariadb_binaries() is None:
        pytest.skip("no mariadbd on this machine")
    # Outside pytest's tmp tree: the private PostgreSQL runs as another system user, and pytest
    # resets the permissions of its own tree when another session starts.
    workdir = tempfile.mkdtemp(prefix=f"outboxkit-chaos-{capture}-")
    try:
        result = run_chaos(ChaosOptions(faults=12, seed=20261208, workdir=workdir, capture=capture), progress=print)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(result.tally.as_dict(), dict(result.faults), f"{result.elapsed:.1f}s", f"stall {result.longest_stall:.2f}s")
    assert sum(result.faults.values()) == 12
    assert set(result.faults) == set(KINDS), "the seed draws every kind of fault"
    assert result.tally.committed > 100
    assert result.tally.lost == 0
    assert result.tally.phantom == 0
    assert result.tally.order_violations == 0
    assert result.relay_exits == [0, 0, 0]
    assert result.bad_dead == result.bad_rows, "every bad row is a dead letter with a reason"
    assert result.longest_stall > 0
