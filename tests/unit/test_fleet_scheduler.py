"""The fleet's fair-share policy (fleet.scheduler): deficit round robin by events, no I/O."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outboxkit.fleet.scheduler import FairScheduler


def test_round_robin_between_backlogged_outboxes() -> None:
    s = FairScheduler(quantum=10, slots=1)
    for name in "abc":
        s.ask(name, 10)
    order = []
    for _ in range(9):
        turn = s.grant()
        assert turn is not None and turn.limit == 10
        order.append(turn.name)
        s.finished(turn.name, 10)  # full: still backlogged
        s.ask(turn.name, 10)
    assert "".join(order) == "abcabcabc"


def test_no_grant_beyond_slots_and_overdue_frees_the_slot() -> None:
    s = FairScheduler(quantum=5, slots=2)
    for name in "abc":
        s.ask(name, 5)
    first, second = s.grant(), s.grant()
    assert first is not None and second is not None
    assert s.grant() is None  # both slots held
    s.overdue(first.name)  # a slow fetch gives its slot away
    third = s.grant()
    assert third is not None and third.name == "c"
    with pytest.raises(ValueError):
        s.ask(first.name, 5)  # still fetching: one fetch per outbox at a time
    s.finished(first.name, 0)
    s.ask(first.name, 5)


def test_idle_outbox_banks_no_credit() -> None:
    s = FairScheduler(quantum=100, slots=1)
    s.ask("a", 1000)
    turn = s.grant()
    assert turn is not None and turn.limit == 100
    s.finished("a", 3)  # fewer than allowed: emptied
    assert s.deficit("a") == 0
    s.ask("a", 1000)
    turn = s.grant()
    assert turn is not None and turn.limit == 100


def test_unused_part_of_a_full_turn_carries_at_most_one_quantum() -> None:
    s = FairScheduler(quantum=100, slots=1)
    for _ in range(5):
        s.ask("a", 40)  # asks for less than its quantum every time
        turn = s.grant()
        assert turn is not None and turn.limit == 40
        s.finished("a", 40)
        assert s.deficit("a") <= 100


def test_cancel_and_forget() -> None:
    s = FairScheduler(quantum=5, slots=1)
    s.ask("a", 5)
    s.ask("b", 5)
    s.cancel("a")
    turn = s.grant()
    assert turn is not None and turn.name == "b"
    s.forget("b")
    assert s.running == frozenset() and s.waiting == ()


weights = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 4), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(weights=weights, quantum=st.integers(1, 50), rounds=st.integers(1, 20))
def test_backlogged_outboxes_get_events_in_proportion_to_weight(
    weights: dict[str, int], quantum: int, rounds: int
) -> None:
    """Every outbox always has more than it may take: after whole rounds, each took exactly its
    weight's share (the policy's promise, stated as counts)."""
    s = FairScheduler(quantum=quantum, slots=1)
    for name, w in weights.items():
        s.ask(name, 10**9, w)
    taken: Counter[str] = Counter()
    for _ in range(rounds * len(weights)):
        turn = s.grant()
        assert turn is not None
        taken[turn.name] += turn.limit
        s.finished(turn.name, turn.limit)
        s.ask(turn.name, 10**9, weights[turn.name])
    for name, w in weights.items():
        assert taken[name] == rounds * quantum * w


ops = st.lists(
    st.tuples(
        st.sampled_from(["ask", "grant", "finish", "overdue", "cancel"]), st.sampled_from("abcde"), st.integers(0, 80)
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, quantum=st.integers(1, 30), slots=st.integers(1, 3))
def test_invariants_under_any_sequence(ops: list[tuple[str, str, int]], quantum: int, slots: int) -> None:
    """Slots are never exceeded, a grant never exceeds what was asked nor two quanta, and a waiting
    outbox is granted before any other outbox gets two turns (no starvation)."""
    s = FairScheduler(quantum=quantum, slots=slots)
    holding: set[str] = set()
    running: set[str] = set()
    asked: dict[str, int] = {}
    grants_since_ask: dict[str, Counter[str]] = {}
    for op, name, n in ops:
        if op == "ask" and name not in asked and name not in running:
            want = max(1, n)
            s.ask(name, want)
            asked[name] = want
            grants_since_ask[name] = Counter()
        elif op == "grant":
            turn = s.grant()
            if turn is None:
                assert len(holding) >= slots or not asked
                continue
            assert turn.name in asked
            assert 1 <= turn.limit <= min(asked.pop(turn.name), 2 * quantum)
            grants_since_ask.pop(turn.name)
            for counts in grants_since_ask.values():
                counts[turn.name] += 1
                assert counts[turn.name] <= 1, "an outbox waited while another got two turns"
            holding.add(turn.name)
            running.add(turn.name)
            assert len(holding) <= slots
        elif op == "finish" and name in running:
            s.finished(name, n)
            running.discard(name)
            holding.discard(name)
        elif op == "overdue" and name in running:
            s.overdue(name)
            holding.discard(name)
        elif op == "cancel" and name in asked:
            s.cancel(name)
            del asked[name]
            grants_since_ask.pop(name)
