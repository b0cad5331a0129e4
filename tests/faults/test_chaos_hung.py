"""The fault kinds a run gets only when asked: a hung broker (every byte to NATS held for 0.5-6 s,
no connection closed), one relay's hung database link (its leases or slot taken by another relay
while it hangs; fenced when it thaws), and every database session killed while the server stays up.
On the table relay, and on the wal and binlog relays (one reader, two standbys). Then 0 lost,
0 phantom, 0 per-key order violations among first deliveries, every relay exits 0 on SIGTERM."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from outboxkit.testing.chaos import EXTRA_KINDS, ChaosOptions, run_chaos
from outboxkit.testing.chaosdb import mariadb_binaries


@pytest.mark.slow
@pytest.mark.xdist_group("wal-crash")
@pytest.mark.parametrize("capture", ["table", "wal", "binlog"])
def test_hung_connections_and_killed_sessions(capture: str) -> None:
    if capture in ("table", "wal"):
        pytest.importorskip("pgserver")
    elif mariadb_binaries() is None:
        pytest.skip("no mariadbd on this machine")
    workdir = tempfile.mkdtemp(prefix=f"outboxkit-hung-{capture}-")
    kinds = ("relay-kill", *EXTRA_KINDS)  # a kill too: a relay that hung and one that died
    try:
        options = ChaosOptions(faults=8, seed=20261207, workdir=workdir, capture=capture, kinds=kinds)
        result = run_chaos(options, progress=print)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(result.tally.as_dict(), dict(result.faults), f"{result.elapsed:.1f}s", f"stall {result.longest_stall:.2f}s")
    assert sum(result.faults.values()) == 8
    assert set(EXTRA_KINDS) <= set(result.faults), "the seed draws every new kind"
    assert result.tally.committed > 100
    assert result.tally.lost == 0
    assert result.tally.phantom == 0
    assert result.tally.order_violations == 0
    assert result.relay_exits == [0, 0, 0]
