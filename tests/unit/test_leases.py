"""Lease decisions (core.leases): drain then release, and the relay's own deadline."""

from __future__ import annotations

from outboxkit.core.leases import (
    RENEW_EVERY,
    RENEW_SHORT,
    TRUST,
    adopt,
    deadline,
    fetchable,
    renew_after,
    stale,
    surplus,
)
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


def test_a_relay_takes_back_what_the_table_gives_its_name_and_it_does_not_hold() -> None:
    assert adopt({}, {3: 7, 4: 2}) == {3, 4}  # started again under the same owner name
    assert adopt({3: 7, 4: 2}, {3: 7, 4: 2}) == set()  # an ordinary renewal
    assert adopt({3: 7}, {3: 8}) == {3}  # the table's epoch is not ours: re-grant, fencing the other
    assert adopt({3: 7, 5: 1}, {3: 7}) == set()  # a lost bucket is not adopted: it is gone


def test_a_relay_below_its_fair_share_renews_sooner() -> None:
    ttl = 6.0
    assert renew_after(0, 22, ttl) == ttl * RENEW_SHORT  # restarted or joining: buckets to take
    assert renew_after(20, 22, ttl) == ttl * RENEW_SHORT
    assert renew_after(21, 22, ttl) == ttl * RENEW_EVERY  # 64 = 22 + 21 + 21: at its share
    assert renew_after(22, 22, ttl) == ttl * RENEW_EVERY
    assert renew_after(64, 22, ttl) == ttl * RENEW_EVERY  # over it: draining, not taking
    assert renew_after(0, 0, ttl) == ttl * RENEW_EVERY  # no renewal yet / SQLite standby
    assert RENEW_SHORT < RENEW_EVERY < TRUST  # renewed well before the local deadline


def test_bounded_dict_forgets_the_least_recently_used() -> None:
    d: BoundedDict[str, int] = BoundedDict(2)
    d["a"], d["b"] = 1, 2
    assert d.get("a") == 1  # touch a: b is now the oldest
    d["c"] = 3
    assert "b" not in d and "a" in d and "c" in d and len(d) == 2
    assert d.pop("a") == 1 and d.get("a") is None
