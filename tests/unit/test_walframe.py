"""The streaming reader's framing (``walframe``): rounds of whole units, and the position each
round is before (pure, no service)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from outboxkit.stores.postgres.walframe import Framer, commit_end


def begin() -> bytes:
    return b"B" + struct.pack("!qqI", 0, 0, 1)


def change(i: int) -> bytes:
    return b"I" + struct.pack("!I", i)


def commit(end: int) -> bytes:
    return b"C" + struct.pack("!bqqq", 0, end - 8, end, 0)


def loose(lsn: int) -> bytes:
    """A non-transactional logical message."""
    return b"M" + struct.pack("!bq", 0, lsn) + b"p\0" + struct.pack("!i", 0)


# A stream: units in WAL order, each a transaction (its number of changes) or a loose message,
# with keepalives the server may send between units and inside transactions.
units = st.lists(st.one_of(st.integers(min_value=0, max_value=6), st.none()), max_size=25)


@given(units, st.lists(st.booleans(), max_size=200), st.lists(st.integers(min_value=1, max_value=12), max_size=60))
def test_rounds_are_whole_units_in_order_and_upto_never_passes_an_unseen_unit(
    shape: list[int | None], pings: list[bool], limits: list[int]
) -> None:
    start = 1000
    framer = Framer(start)
    stream: list[tuple[str, object]] = []  # ("data", bytes) / ("keepalive", wal end)
    ends: list[int] = []  # each unit's end, in order
    position = start
    flips = iter(pings)

    def maybe_keepalive() -> None:
        if next(flips, False):
            stream.append(("keepalive", position))

    for i, unit in enumerate(shape):
        maybe_keepalive()
        position += 100
        if unit is None:
            stream.append(("data", loose(position)))
        else:
            stream.append(("data", begin()))
            for c in range(unit):
                stream.append(("data", change(i * 10 + c)))
                # The server's WAL end inside a transaction is before its commit.
                if next(flips, False):
                    stream.append(("keepalive", position - 50))
            stream.append(("data", commit(position)))
        ends.append(position)
    maybe_keepalive()

    sent: list[bytes] = [m for kind, m in stream if kind == "data"]  # type: ignore[misc]
    got: list[bytes] = []
    last = start
    rounds = iter(limits)
    for kind, item in stream:
        if kind == "data":
            framer.data(item)  # type: ignore[arg-type]
        else:
            framer.keepalive(item)  # type: ignore[arg-type]
        limit = next(rounds, None)
        if limit is None:
            continue
        messages, upto = framer.take(limit)
        got.extend(messages)
        # Never cut inside a transaction: a round starts with a Begin or a loose message.
        assert not messages or messages[0][:1] in (b"B", b"M")
        assert not messages or messages[-1][:1] in (b"C", b"M")
        assert upto >= last  # never back
        last = upto
        # Every unit not yet handed out ends after ``upto``: confirming it skips nothing unseen.
        handed = sum(1 for m in got if m[:1] in (b"C", b"M"))
        assert all(end > upto for end in ends[handed:])
        assert all(end <= upto for end in ends[:handed])
    messages, upto = framer.take(10**9)
    got.extend(messages)
    assert got == sent
    assert not framer.fresh() or framer.take(1) == ([], upto)


def test_a_round_takes_whole_units_until_the_limit_like_a_peek() -> None:
    framer = Framer(0)
    for m in (begin(), change(1), change(2), change(3), commit(100), loose(150), begin(), commit(200)):
        framer.data(m)
    messages, upto = framer.take(2)  # the limit falls inside the first transaction: all of it
    assert len(messages) == 5 and upto == 100
    messages, upto = framer.take(1)
    assert messages == [loose(150)] and upto == 150
    assert framer.take(5) == ([begin(), commit(200)], 200)


def test_heartbeat_moves_only_between_units() -> None:
    framer = Framer(0)
    assert framer.keepalive(50) and framer.take(10) == ([], 50)
    framer.data(begin())
    assert not framer.keepalive(80)  # a transaction is open: its commit is later
    assert framer.take(10) == ([], 50)
    framer.data(commit(90))
    assert framer.keepalive(120)
    assert framer.take(10) == ([begin(), commit(90)], 120)
    assert not framer.fresh()
    assert commit_end(commit(90)) == 90
