"""KeyedDispatcher (G5): per-key order under any interleaving of takes, confirms and failures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.ordering import KeyedDispatcher


def _events(keys: list[str | None], seqs: list[int] | None = None) -> list[OutboxEvent]:
    seqs = seqs or list(range(1, len(keys) + 1))
    return [OutboxEvent(seq=s, id=f"e{s}", topic="t", payload=b"", key=k) for s, k in zip(seqs, keys, strict=True)]


@st.composite
def batches(draw: st.DrawFn) -> list[OutboxEvent]:
    keys = draw(st.lists(st.sampled_from([None, "a", "b", "c", "d"]), max_size=30))
    gaps = draw(st.lists(st.integers(1, 5), min_size=len(keys), max_size=len(keys)))
    seqs, seq = [], 0
    for gap in gaps:  # ascending, not necessarily contiguous (rolled-back ids leave holes)
        seq += gap
        seqs.append(seq)
    return _events(keys, seqs)


@settings(max_examples=400, deadline=None)
@given(events=batches(), data=st.data())
def test_dispatch_keeps_per_key_order(events: list[OutboxEvent], data: st.DataObject) -> None:
    d = KeyedDispatcher(events)
    by_key: dict[str, list[OutboxEvent]] = {}
    for e in events:
        if e.key is not None:
            by_key.setdefault(e.key, []).append(e)

    handed: list[OutboxEvent] = []
    in_flight: list[OutboxEvent] = []
    confirmed: set[int] = set()
    failed_keys: dict[str, int] = {}  # key -> seq of its failed event

    def ready() -> list[OutboxEvent]:
        """The model: events that may be published now."""
        out = []
        taken = {e.seq for e in handed}
        for e in events:
            if e.seq in taken:
                continue
            if e.key is None:
                out.append(e)
                continue
            if e.key in failed_keys:
                continue
            earlier = [x for x in by_key[e.key] if x.seq < e.seq]
            if all(x.seq in confirmed for x in earlier):
                out.append(e)
        return sorted(out, key=lambda e: e.seq)

    def resolve(event: OutboxEvent, fail: bool) -> None:
        in_flight.remove(event)
        if fail:
            d.failed(event)
            if event.key is not None:
                failed_keys[event.key] = event.seq
        else:
            d.confirmed(event)
            confirmed.add(event.seq)
        assert d.in_flight == len(in_flight)

    def take(limit: int) -> None:
        expected = ready()[:limit]
        got = d.take(limit)
        assert len(got) <= limit
        assert got == expected, "take() must hand out the oldest ready events, up to the limit"
        for e in got:
            assert e not in handed, "an event is handed out at most once"
            if e.key is not None:
                assert all(x.key != e.key for x in in_flight), "two events of one key in flight"
                assert e.key not in failed_keys, "an event handed out after its key failed"
                assert all(x.seq in confirmed for x in by_key[e.key] if x.seq < e.seq)
            handed.append(e)
            in_flight.append(e)
        assert d.in_flight == len(in_flight)

    # A random interleaving of takes, confirms and failures...
    for _ in range(data.draw(st.integers(0, 3 * len(events) + 3), label="steps")):
        if in_flight and data.draw(st.booleans(), label="resolve"):
            event = data.draw(st.sampled_from(in_flight), label="which")
            resolve(event, fail=data.draw(st.integers(0, 3), label="fail?") == 0)
        else:
            take(data.draw(st.integers(0, 6), label="limit"))
    # ...then the relay keeps going until the batch is done.
    for _ in range(2 * len(events) + 2):
        if d.finished():
            break
        if in_flight:
            resolve(in_flight[0], fail=False)
        else:
            take(len(events))
    assert d.finished(), "the dispatcher must finish once everything in flight is resolved"
    assert not in_flight

    withdrawn = d.withdrawn
    expected_withdrawn = sorted(
        (e for e in events if e.key in failed_keys and e.seq > failed_keys[e.key]), key=lambda e: e.seq
    )
    assert sorted(withdrawn, key=lambda e: e.seq) == expected_withdrawn
    for key in failed_keys:  # within a key, withdrawn events keep their order (retried behind the failure)
        mine = [e.seq for e in withdrawn if e.key == key]
        assert mine == sorted(mine)
    # every event is handed out exactly once or withdrawn, never both
    assert sorted([e.seq for e in handed] + [e.seq for e in withdrawn]) == [e.seq for e in events]


def test_one_event_per_key_in_flight_and_keyless_are_independent() -> None:
    a1, b1, a2, n1, n2, a3 = _events(["a", "b", "a", None, None, "a"])
    d = KeyedDispatcher([a1, b1, a2, n1, n2, a3])
    assert d.take(10) == [a1, b1, n1, n2]
    assert d.take(10) == []
    d.confirmed(a1)
    assert d.take(10) == [a2]
    d.confirmed(n2)
    d.confirmed(n1)
    d.confirmed(b1)
    d.confirmed(a2)
    assert not d.finished()
    assert d.take(10) == [a3]
    d.confirmed(a3)
    assert d.finished()
    assert d.withdrawn == []


def test_take_respects_limit_and_age() -> None:
    events = _events(["a", "b", "c", None, "d"])
    d = KeyedDispatcher(events)
    assert d.take(0) == []
    assert d.take(2) == events[:2]
    assert d.take(2) == events[2:4]
    assert d.take(2) == events[4:]
    assert d.in_flight == 5


def test_failure_withdraws_the_rest_of_its_key_only() -> None:
    a1, b1, a2, a3, b2 = _events(["a", "b", "a", "a", "b"])
    d = KeyedDispatcher([a1, b1, a2, a3, b2])
    assert d.take(10) == [a1, b1]
    d.failed(a1)
    d.confirmed(b1)
    assert d.take(10) == [b2]
    d.confirmed(b2)
    assert d.finished()
    assert d.withdrawn == [a2, a3]


def test_released_event_is_ordered_by_age_among_ready_ones() -> None:
    a1, b1, a2, b2 = _events(["a", "b", "a", "b"])
    d = KeyedDispatcher([a1, b1, a2, b2])
    assert d.take(2) == [a1, b1]
    d.confirmed(b1)
    d.confirmed(a1)
    assert d.take(1) == [a2]
    assert d.take(1) == [b2]


def test_events_must_be_in_seq_order_per_key() -> None:
    with pytest.raises(ValueError, match="ascending"):
        KeyedDispatcher(_events(["a", "a"], [2, 1]))


def test_confirming_an_event_not_in_flight_is_refused() -> None:
    a1, a2 = _events(["a", "a"])
    d = KeyedDispatcher([a1, a2])
    assert d.take(1) == [a1]
    with pytest.raises(ValueError, match="not in flight"):
        d.confirmed(a2)
    with pytest.raises(ValueError, match="not in flight"):
        d.failed(a2)
    # a refused call leaves the dispatcher as it was
    d.confirmed(a1)
    assert d.take(10) == [a2]


def test_resolving_an_event_that_was_never_taken_is_refused() -> None:
    # a1 is at the head of its key but was never handed out: confirming it must not release a2
    # (which would also leave a stale ready entry and hand a2 out twice).
    a1, a2 = _events(["a", "a"])
    d = KeyedDispatcher([a1, a2])
    with pytest.raises(ValueError, match="not in flight"):
        d.confirmed(a1)
    assert d.in_flight == 0
    assert d.take(10) == [a1]


def test_failing_an_event_that_was_never_taken_is_refused() -> None:
    (a1,) = _events(["a"])
    d = KeyedDispatcher([a1])
    with pytest.raises(ValueError, match="not in flight"):
        d.failed(a1)
    assert d.take(10) == [a1]


# -- several events of a key in flight (ordered_pipeline buses) ---------------------------------------


@settings(max_examples=300, deadline=None)
@given(events=batches(), depth=st.sampled_from([1, 2, 3, 5]), data=st.data())
def test_with_depth_a_key_is_sent_in_order_and_nothing_follows_a_failure(
    events: list[OutboxEvent], depth: int, data: st.DataObject
) -> None:
    d = KeyedDispatcher(events, depth=depth)
    sent: dict[str | None, list[int]] = {}
    in_flight: list[OutboxEvent] = []
    failed_at: dict[str, int] = {}
    withdrawn: list[OutboxEvent] = []
    settled: list[int] = []
    for _ in range(400):
        if d.finished():
            break
        if in_flight and data.draw(st.booleans()):
            # Buses with ordered pipelines confirm a key's events in send order: resolve the oldest
            # in flight of a random key, sometimes as a failure.
            keys = sorted({e.key or f"_{e.seq}" for e in in_flight})
            pick = data.draw(st.sampled_from(keys))
            event = next(e for e in in_flight if (e.key or f"_{e.seq}") == pick)
            in_flight.remove(event)
            if d.orphan(event):
                d.settle_orphan(event)
                settled.append(event.seq)
            elif data.draw(st.integers(0, 4)) == 0:
                withdrawn += d.failed(event)
                if event.key is not None:
                    failed_at.setdefault(event.key, event.seq)
            else:
                d.confirmed(event)
        else:
            taken = d.take(data.draw(st.integers(1, 4)))
            for event in taken:
                sent.setdefault(event.key, []).append(event.seq)
                if event.key is not None:
                    flying = [e for e in in_flight if e.key == event.key and not d.orphan(e)]
                    assert len(flying) < depth, "never more than depth events of a key in flight"
            in_flight += taken
    for key, seqs in sent.items():
        if key is not None:
            assert seqs == sorted(seqs), f"key {key} sent out of order: {seqs}"
    for key, seq in failed_at.items():
        later = [e.seq for e in withdrawn if e.key == key]
        assert all(s > seq for s in later), "only events after the failure are withdrawn"


def test_depth_lets_a_hot_key_have_several_in_flight_and_a_failure_orphans_the_rest() -> None:
    a1, a2, a3, a4 = _events(["a", "a", "a", "a"])
    d = KeyedDispatcher([a1, a2, a3, a4], depth=3)
    assert d.take(10) == [a1, a2, a3]
    assert d.take(10) == []
    d.confirmed(a1)
    assert d.take(10) == [a4]
    assert d.failed(a2) == []  # a3 and a4 are in flight: orphans, nothing waiting to withdraw
    assert d.orphan(a3) and d.orphan(a4)
    d.settle_orphan(a3)
    d.settle_orphan(a4)
    assert d.finished()


def test_failure_with_depth_withdraws_the_waiting_rest() -> None:
    a1, a2, a3, b1 = _events(["a", "a", "a", "b"])
    d = KeyedDispatcher([a1, a2, a3, b1], depth=2)
    assert d.take(10) == [a1, a2, b1]
    assert d.failed(a1) == [a3]
    assert d.orphan(a2) and not d.orphan(b1)
    with pytest.raises(ValueError, match="not in flight"):
        d.confirmed(a2)
    d.settle_orphan(a2)
    d.confirmed(b1)
    assert d.finished() and d.withdrawn == [a3]
