"""core.isolate.Narrowing: a round that fails twice the same way is narrowed to the input at fault (H13)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxkit.core.isolate import Narrowing, signature


def test_one_failure_reads_the_same_round_again() -> None:
    n = Narrowing(600)
    n.failed(10, "E: x")
    assert n.limit == 600 and not n.narrowed


def test_twice_the_same_way_narrows_then_sets_the_single_input_aside() -> None:
    n = Narrowing(600)
    limits = []
    for _ in range(20):
        n.failed(10, "E: x")
        limits.append(n.limit)
        if n.set_aside_due:
            break
    assert limits == [600, 150, 37, 9, 2, 1, 1]
    assert n.set_aside_due and n.error == "E: x"
    n.set_aside()
    assert not n.set_aside_due and n.limit == 1
    n.succeeded()
    assert n.limit == 2


def test_another_position_or_error_starts_counting_again() -> None:
    n = Narrowing(64)
    n.failed(1, "E: x")
    n.failed(2, "E: x")  # the position moved: another round
    n.failed(2, "F: y")  # another error
    assert n.limit == 64
    n.failed(2, "F: y")
    assert n.limit == 16


def test_success_grows_back_to_the_full_limit() -> None:
    n = Narrowing(100)
    for _ in range(4):
        n.failed(0, "E")
    assert n.limit == 1 and not n.set_aside_due
    for _ in range(10):
        n.succeeded()
    assert n.limit == 100 and not n.narrowed


def test_full_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Narrowing(0)


def test_signature_is_class_and_first_line_bounded() -> None:
    assert signature(ValueError("a\nb")) == "ValueError: a"
    assert signature(RecursionError()) == "RecursionError: "
    assert len(signature(ValueError("x" * 10_000))) < 250


@given(st.integers(1, 10_000), st.integers(0, 9_999))
def test_a_fault_at_any_index_is_found_and_only_it_is_set_aside(full: int, fault: int) -> None:
    """Simulated log: inputs 0..; the one at ``fault`` always fails the round that reads it. The
    relay must set aside exactly that input and read every other one, in a bounded number of rounds."""
    total = max(fault + 1, 50)
    n = Narrowing(full)
    position, read, aside, rounds = 0, [], [], 0
    while position < total:
        rounds += 1
        assert rounds < 10 * total + 100
        if n.set_aside_due:
            aside.append(position)
            position += 1
            n.set_aside()
            continue
        batch = list(range(position, min(total, position + n.limit)))
        if fault in batch:
            n.failed(position, "E: poison")
            continue
        read.extend(batch)
        position += len(batch)
        n.succeeded()
    assert aside == [fault]
    assert read == [i for i in range(total) if i != fault]
