"""The PostgreSQL wake-up's pure parts: when a relay polls and when it sleeps, and the SQL text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.schema import PostgresSchema
from outboxkit.stores.postgres.wake import (
    POLL_MAX_S,
    POLL_MIN_S,
    QUIET_S,
    SLOTS,
    WakePolicy,
    sleep_sql,
    wake_keys,
    wake_sql,
)


def test_a_new_policy_sleeps_at_once() -> None:
    assert WakePolicy().sleepy(0.0)


def test_a_single_row_per_wake_up_is_not_busy() -> None:
    policy = WakePolicy()
    assert not policy.fetched(1.0, 1) and policy.sleepy(1.0)
    assert policy.fetched(2.0, 2) and not policy.sleepy(2.0)


def test_activity_polls_fast_then_backs_off_and_sleeps_when_quiet() -> None:
    policy = WakePolicy()
    assert policy.fetched(100.0, 50)
    assert not policy.sleepy(100.0)
    waits = [policy.next_poll() for _ in range(20)]
    assert waits[0] == POLL_MIN_S
    assert waits == sorted(waits) and max(waits) == POLL_MAX_S
    assert policy.sleepy(100.0 + QUIET_S)
    policy.fetched(200.0, 3)  # busy again: fast polling again
    assert policy.next_poll() == POLL_MIN_S


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=30))
def test_polls_stay_within_bounds(gaps: list[float]) -> None:
    policy = WakePolicy()
    now = 0.0
    for gap in gaps:
        now += gap
        if gap < 1:
            policy.fetched(now, 2)
        assert POLL_MIN_S <= policy.next_poll() <= POLL_MAX_S
        assert policy.sleepy(now) == (now - policy.last_rows >= QUIET_S)


@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True), st.none() | st.just("s1"))
def test_slot_keys_are_distinct_stable_bigints(table: str, schema: str | None) -> None:
    keys = wake_keys(TableRef(table, schema))
    assert len(set(keys)) == SLOTS and keys == wake_keys(TableRef(table, schema))
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert set(keys).isdisjoint(wake_keys(TableRef(table + "x", schema)))


def test_the_trigger_notifies_only_when_a_slot_is_taken() -> None:
    ref = TableRef("outbox", "app")
    ddl = PostgresSchema().ddl(ref)
    trigger = next(s for s in ddl if s.startswith("CREATE TRIGGER"))
    assert "FOR EACH STATEMENT WHEN (CASE" in trigger
    assert all(f"pg_try_advisory_xact_lock_shared({k})" in trigger for k in wake_keys(ref))
    assert all(f"pg_try_advisory_lock({k})" in sleep_sql(ref) for k in wake_keys(ref))
    assert wake_sql(ref, 2) == f"SELECT pg_advisory_unlock({wake_keys(ref)[2]})"
    assert not any("CREATE TRIGGER" in s for s in PostgresSchema().ddl(ref, notify=False))
