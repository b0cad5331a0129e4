"""lab.recovery: steady-state latency and per-fault recovery are told apart (pure, no services)."""

from __future__ import annotations

from outboxkit.lab.recovery import FaultAt, Timed, split


def events(*rows: tuple[str, int, float, float]) -> list[Timed]:
    return [Timed(event_id, tx, committed, stored) for event_id, tx, committed, stored in rows]


def test_a_relay_outage_is_recovery_not_steady_state() -> None:
    # Steady: 2 ms each. At t=10 the relay dies; events committed at 10.1 and 10.5 wait until 12.0.
    timed = events(
        ("a", 1, 1.000, 1.002),
        ("b", 2, 2.000, 2.002),
        ("c", 3, 10.100, 12.000),
        ("d", 4, 10.500, 12.001),
        ("e", 5, 13.000, 13.002),  # after the recovery: steady again
    )
    steady, (recovery,) = split(timed, [FaultAt("kill-relay", 3, 10.0)])
    assert [round(ms, 3) for ms in steady] == [2.0, 2.0, 2.0]
    assert recovery.kind == "kill-relay" and recovery.disturbed == 2
    assert round(recovery.recovery_ms) == 1900  # c waited 1.9 s
    assert round(recovery.resumed_ms or 0) == 2000  # the first event after the fault reached the bus at 12.0


def test_an_event_in_flight_when_the_fault_hits_is_disturbed() -> None:
    timed = events(("a", 1, 9.990, 11.000), ("b", 2, 10.200, 11.001), ("c", 3, 20.0, 20.001))
    steady, (recovery,) = split(timed, [FaultAt("broker-restart", 2, 10.0)])
    assert recovery.disturbed == 2 and round(recovery.recovery_ms) == 1010
    assert [round(ms) for ms in steady] == [1]


def test_the_faults_own_transaction_counts_even_when_delivered_long_after() -> None:
    # The writer committed tx 7 and died; its restart sent the events 0.9 s later.
    timed = events(("a", 7, 5.000, 5.900), ("b", 8, 6.000, 6.001))
    steady, (recovery,) = split(timed, [FaultAt("kill-after-commit", 7, 5.001)])
    assert recovery.disturbed == 2 and round(recovery.recovery_ms) == 900
    assert steady == []  # b came right after the restart: part of the recovery, not steady state


def test_a_fault_that_disturbs_nothing_and_no_events_after_it() -> None:
    timed = events(("a", 1, 1.0, 1.001))
    steady, (recovery,) = split(timed, [FaultAt("db-kill", 5, 50.0)])
    assert recovery.disturbed == 0 and recovery.recovery_ms == 0.0 and recovery.resumed_ms is None
    assert len(steady) == 1


def test_stored_before_commit_counts_as_zero_latency() -> None:
    (event,) = events(("a", 1, 2.0, 1.5))  # publish-then-commit: on the bus before COMMIT returned
    assert event.latency_ms == 0.0
