"""Lease decisions (core.leases): drain then release, and the relay's own deadline."""

from __future__ import annotations

from outboxkit.core.leases import TRUST, deadline, fetchable, stale, surplus
from outboxkit.core.lru import BoundedDict


def test_surplus_is_the_highest_buckets_beyond_the_share() -> None:
    held = {b: 1 for b in range(64)}
    assert surplus(held, 32) == set(range(32, 64))
    assert surplus(held, 64) == set()
    assert surplus({1: 1, 5: 1, 9: 1}, 2) == {9}
    assert surplus({}, 0) == set()


def test_a_batch_reads_every_held_bucket_but_the_draining_ones() -> None:
    assert fetchable({1: 3, 2: 4, 3: 5}, {2}) == {1: 3, 3: 5}


def test_the_local_deadline_counts_from_the_send_and_keeps_a_margin() -> None:
    assert deadline(100.0, 6.0) == 100.0 + 6.0 * TRUST
    assert TRUST < 1.0


def test_stale_buckets_are_the_lost_and_those_held_again_at_another_epoch() -> None:
    before = {1: 3, 2: 4, 3: 5}
    assert stale(before, before) == set()
    assert stale(before, {1: 3, 2: 4}) == {3}  # lost
    assert stale(before, {1: 3, 2: 6, 3: 5}) == {2}  # paused past the lease, taken back at a new epoch
    assert stale(before, {1: 3, 2: 4, 3: 5, 9: 1}) == set()  # a gain leaves what is in hand alone
    assert stale({}, {1: 1}) == set()


def test_bounded_dict_forgets_the_least_recently_used() -> None:
    d: BoundedDict[str, int] = BoundedDict(2)
    d["a"], d["b"] = 1, 2
    assert d.get("a") == 1  # touch a: b is now the oldest
    d["c"] = 3
    assert "b" not in d and "a" in d and "c" in d and len(d) == 2
    assert d.pop("a") == 1 and d.get("a") is None
