"""The verifier: lost, phantom, duplicate and out-of-order deliveries."""

from __future__ import annotations

from outboxkit.core.tally import Delivery, tally

# ids a1..a3 are key "a" changes 1..3, b1..b2 key "b", n1 has no key
COMMITTED: dict[str, tuple[str | None, int | None]] = {
    "a1": ("a", 1),
    "a2": ("a", 2),
    "a3": ("a", 3),
    "b1": ("b", 1),
    "b2": ("b", 2),
    "n1": (None, None),
}


def _d(*ids: str) -> list[Delivery]:
    return [Delivery(i, *COMMITTED.get(i, (None, None))) for i in ids]


def test_clean_run() -> None:
    t = tally(COMMITTED, _d("a1", "b1", "a2", "n1", "b2", "a3"))
    assert (t.committed, t.published, t.received) == (6, 6, 6)
    assert (t.lost, t.phantom, t.duplicates, t.order_violations) == (0, 0, 0, 0)
    assert t.ok
    assert t.as_dict() == {
        "committed": 6,
        "published": 6,
        "received": 6,
        "lost": 0,
        "phantom": 0,
        "duplicates": 0,
        "order_violations": 0,
        "ok": True,
    }


def test_lost_events() -> None:
    t = tally(COMMITTED, _d("a1", "a2", "b1"))
    assert t.lost == 3
    assert t.published == 3
    assert not t.ok


def test_nothing_delivered() -> None:
    t = tally(COMMITTED, [])
    assert (t.lost, t.received, t.published) == (6, 0, 0)


def test_phantoms_are_counted_once_per_id() -> None:
    t = tally(COMMITTED, [*_d(*COMMITTED), Delivery("rolled-back", "a", None), Delivery("rolled-back", "a", None)])
    assert t.phantom == 1
    assert t.lost == 0
    assert t.received == 8
    assert not t.ok


def test_duplicates_are_extra_copies() -> None:
    t = tally(COMMITTED, _d("a1", "a1", "a1", "b1", "b1", "a2", "a3", "b2", "n1"))
    assert t.duplicates == 3
    assert t.received == 9
    assert t.published == 6
    assert t.ok  # duplicates are allowed (G6), they are only counted


def test_order_violation_among_first_deliveries() -> None:
    t = tally(COMMITTED, _d("a2", "a1", "a3", "b1", "b2", "n1"))
    assert t.order_violations == 1
    assert not t.ok


def test_each_late_first_delivery_is_a_violation() -> None:
    t = tally(COMMITTED, _d("a3", "a1", "a2"))
    assert t.order_violations == 2


def test_keys_are_ordered_independently() -> None:
    t = tally(COMMITTED, _d("b1", "a1", "b2", "a2", "a3"))
    assert t.order_violations == 0


def test_late_duplicate_is_not_an_order_violation() -> None:
    # a1 redelivered after a2 and a3 (a crash between confirm and mark): a duplicate, not reordering
    t = tally(COMMITTED, _d("a1", "a2", "a3", "a1", "a2", "b1", "b2", "n1"))
    assert t.order_violations == 0
    assert t.duplicates == 2
    assert t.ok


def test_duplicate_of_a_reordered_event_counts_once() -> None:
    t = tally(COMMITTED, _d("a2", "a1", "a1", "a3"))
    assert t.order_violations == 1
    assert t.duplicates == 1


def test_gaps_are_not_violations() -> None:
    # a2 lost: a1 then a3 is still in order; the loss is reported as lost
    t = tally(COMMITTED, _d("a1", "a3"))
    assert t.order_violations == 0
    assert t.lost == 4


def test_keyless_events_have_no_order() -> None:
    committed: dict[str, tuple[str | None, int | None]] = {"x": (None, None), "y": (None, None)}
    t = tally(committed, [Delivery("y", None, None), Delivery("x", None, None)])
    assert t.order_violations == 0
    assert t.ok


def test_published_can_be_given() -> None:
    assert tally(COMMITTED, _d("a1"), published=4).published == 4
