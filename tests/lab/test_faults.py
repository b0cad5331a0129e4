"""The fault schedule and the transaction plan are pure functions of the seed."""

from __future__ import annotations

import pytest

from outboxkit.lab.faults import FAULTS, POINTS, plan, schedule


def test_schedule_repeats_for_a_seed_and_spreads_one_fault_per_transaction() -> None:
    first = schedule(list(FAULTS), 200, seed=7)
    assert first == schedule(list(FAULTS), 200, seed=7)
    assert first != schedule(list(FAULTS), 200, seed=8)
    assert sorted(f.kind for f in first) == sorted(FAULTS)
    assert len({f.tx for f in first}) == len(first)
    assert all(20 <= f.tx < 180 for f in first)
    assert all(f.point in POINTS for f in first)


def test_schedule_refuses_unknown_faults_and_too_short_runs() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        schedule(["kill-everything"], 100, seed=1)
    with pytest.raises(ValueError, match="too few"):
        schedule(list(FAULTS), 5, seed=1)


def test_plan_is_stable_and_commits_at_least_the_requested_events() -> None:
    txns = plan(100, seed=3)
    assert txns == plan(100, seed=3)
    assert sum(t.events for t in txns if not t.rollback) >= 100
    assert [t.index for t in txns] == list(range(len(txns)))
    assert not any(t.rollback for t in plan(100, seed=3, rollback_ratio=0.0))
