"""H13: the decisions that keep one bad input from costing more than itself (core.isolate)."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from outboxkit.core.isolate import Bisector, FetchFaults, SetAside, signature


def run(bisector: Bisector, bad: set[int], flaky: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """Drive ``bisector`` against a table where reading any row of ``bad`` fails; a row of
    ``flaky`` fails only the first time it is read alone."""
    read_alone: set[int] = set()
    while (probe := bisector.probe()) is not None:
        failed = bool(bad & set(probe))
        if len(probe) == 1 and probe[0] in flaky and probe[0] not in read_alone:
            read_alone.add(probe[0])
            failed = True
        bisector.report(not failed)
    return bisector.culprits


def test_one_bad_row_among_many_is_found_in_about_two_log2_reads() -> None:
    b = Bisector(range(1, 2001))
    assert run(b, {1234}) == [1234]
    assert b.reads <= 2 * 12 + 2


def test_every_bad_row_is_found_lowest_first() -> None:
    assert run(Bisector(range(100)), {3, 50, 99}) == [3, 50, 99]


def test_a_row_that_failed_once_alone_but_reads_the_second_time_is_not_named() -> None:
    # A blip between two reads must not condemn a good row: a single row is read twice.
    assert run(Bisector(range(10)), {7}, flaky={2}) == [7]


def test_a_round_that_reads_fine_when_narrowed_names_nobody() -> None:
    assert run(Bisector(range(10)), set()) == []
    assert Bisector([]).probe() is None


def test_culprits_are_capped() -> None:
    assert len(run(Bisector(range(100), max_culprits=5), set(range(100)))) == 5


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 300), min_size=1, max_size=300), st.data())
def test_the_culprits_are_exactly_the_bad_rows(seqs: set[int], data: st.DataObject) -> None:
    bad = data.draw(st.sets(st.sampled_from(sorted(seqs)), max_size=10))
    assert run(Bisector(sorted(seqs)), bad) == sorted(bad)


def test_a_fetch_is_suspect_after_failing_twice_the_same_way() -> None:
    faults = FetchFaults()
    err = sqlite3.OperationalError("Could not decode to UTF-8 column 'key' with text '\ufffd'")
    assert not faults.failed(err)
    assert faults.failed(sqlite3.OperationalError(str(err)))
    assert faults.suspect
    faults.ok()
    assert not faults.suspect


def test_failures_of_different_kinds_do_not_add_up() -> None:
    faults = FetchFaults()
    assert not faults.failed(ValueError("a"))
    assert not faults.failed(KeyError("a"))
    assert not faults.failed(ValueError("a"))
    assert faults.failed(ValueError("a\nsecond line differs"))


def test_signature_is_class_and_first_line() -> None:
    assert signature(RecursionError("maximum recursion depth exceeded\nmore")) == (
        "RecursionError: maximum recursion depth exceeded"
    )


def test_set_aside_is_bounded_and_holds_known_keys() -> None:
    aside = SetAside(limit=3)
    assert aside.add(1, "k1", "r")
    assert not aside.add(1, "k1", "r"), "recorded once"
    for seq in range(2, 6):
        aside.add(seq, None if seq % 2 else f"k{seq}", "r")
    assert len(aside) == 3 and aside.seqs == [3, 4, 5]
    assert aside.keys == frozenset({"k4"})
    assert aside.total == 5 and 1 not in aside and 5 in aside


def test_the_set_aside_record_takes_any_input_and_lists_only_rows_as_seqs() -> None:
    # The tail relay records an event by its id (its position moves past it); the table relay by seq.
    aside = SetAside()
    assert aside.add("event e1", None, "r") and aside.add(7, "k", "r")
    assert aside.seqs == [7] and "event e1" in aside and len(aside) == 2


def test_one_same_way_count_for_both_searches() -> None:
    # The table relay counts a fetch's failures by signature; the tail relay by (position, signature).
    faults = FetchFaults()
    assert not faults.failed_as((10, "E: x"))
    assert not faults.failed_as((11, "E: x")), "another position is another round"
    assert faults.failed_as((11, "E: x"))
