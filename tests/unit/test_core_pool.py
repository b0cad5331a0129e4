"""Connection-pool decisions (core.pool): bounded per server, LRU eviction across databases."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from outboxkit.core.pool import PoolBook


class Conn:
    def __init__(self, key: str) -> None:
        self.key = key


def test_reuse_same_key_open_under_limit_evict_lru_then_wait() -> None:
    book: PoolBook[Conn] = PoolBook(2)
    assert book.take("a").open
    a = Conn("a")
    assert book.take("b").open
    b = Conn("b")
    book.give("a", a, 1.0)
    assert book.take("a").reuse is a  # same key: reused
    book.give("a", a, 2.0)
    book.give("b", b, 3.0)
    decision = book.take("c")  # at the limit: the least recently used idle one makes room
    assert decision.open and decision.evict is a
    assert book.total == 2
    assert book.take("d").evict is b
    assert book.take("e").wait  # every connection busy
    book.lost()
    assert book.take("e").open


def test_expire_closes_old_idle_connections() -> None:
    book: PoolBook[Conn] = PoolBook(3)
    conns = []
    for key in "abc":
        book.take(key)
        conns.append(Conn(key))
    for t, conn in enumerate(conns):
        book.give(conn.key, conn, float(t))
    gone = book.expire(now=10.0, max_idle=8.5)
    assert gone == conns[:2] and book.total == 1 and book.idle == 1
    assert book.drain() == conns[2:] and book.total == 0


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 4),
    ops=st.lists(st.tuples(st.sampled_from(["take", "give", "lost"]), st.sampled_from("abcdef")), max_size=80),
)
def test_never_more_than_limit(limit: int, ops: list[tuple[str, str]]) -> None:
    book: PoolBook[Conn] = PoolBook(limit)
    busy: list[Conn] = []
    alive: set[int] = set()
    for op, key in ops:
        if op == "take":
            d = book.take(key)
            if d.evict is not None:
                alive.discard(id(d.evict))
            if d.reuse is not None:
                assert d.reuse.key == key
                busy.append(d.reuse)
            elif d.open:
                conn = Conn(key)
                alive.add(id(conn))
                busy.append(conn)
            else:
                assert book.idle == 0 and book.total == limit
        elif op == "give" and busy:
            conn = busy.pop(0)
            book.give(conn.key, conn, 0.0)
        elif op == "lost" and busy:
            conn = busy.pop()
            alive.discard(id(conn))
            book.lost()
        assert book.total == len(alive) <= limit
        assert book.busy == len(busy)
