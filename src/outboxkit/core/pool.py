"""Connection-pool decisions without I/O: a bounded number of connections to one server, shared by
many keys (a key is one database and one kind of connection), idle ones kept in LRU order.

* **Reuse** an idle connection of the same key, the most recently used first (it is the one most
  likely still warm, and the others age out);
* else **open** one while fewer than ``limit`` are open (or being opened);
* else, at the limit, **evict** the least recently used idle connection of any other key and open
  one for this key in its place (database-per-tenant: a database whose outbox is quiet gives its
  connection to one that has work);
* else **wait**: every connection is busy. The shell serves waiters first come, first served.

So at most ``limit`` connections exist at any moment, whatever the number of keys. Idle
connections older than ``max_idle`` are closed (:meth:`PoolBook.expire`): an idle fleet holds none.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Take(Generic[C]):
    """The decision for one acquire: ``reuse`` a connection, or ``open`` one (after closing
    ``evict``), or neither (wait)."""

    reuse: C | None = None
    open: bool = False
    evict: C | None = None

    @property
    def wait(self) -> bool:
        return self.reuse is None and not self.open


class PoolBook(Generic[C]):
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.total = 0  # open or being opened, busy or idle
        # id(conn) -> (key, conn, idle since), least recently used first
        self._idle: OrderedDict[int, tuple[Hashable, C, float]] = OrderedDict()

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def busy(self) -> int:
        return self.total - len(self._idle)

    def take(self, key: Hashable) -> Take[C]:
        for ident in reversed(self._idle):
            if self._idle[ident][0] == key:
                return Take(reuse=self._idle.pop(ident)[1])
        if self.total < self.limit:
            self.total += 1
            return Take(open=True)
        if self._idle:
            _, (_, victim, _) = self._idle.popitem(last=False)
            return Take(open=True, evict=victim)  # one closes, one opens: the total stays
        return Take()

    def give(self, key: Hashable, conn: C, now: float) -> None:
        """A busy connection is idle again (usable)."""
        self._idle[id(conn)] = (key, conn, now)

    def lost(self) -> None:
        """A busy connection was closed (broken), or an open failed: its place is free."""
        self.total = max(0, self.total - 1)

    def expire(self, now: float, max_idle: float) -> list[C]:
        """Idle connections unused for ``max_idle`` seconds, removed from the book: close them."""
        old = [ident for ident, (_, _, since) in self._idle.items() if now - since >= max_idle]
        gone = [self._idle.pop(ident)[1] for ident in old]
        self.total -= len(gone)
        return gone

    def drain(self) -> list[C]:
        """Every idle connection, removed from the book (shutting down)."""
        gone = [conn for _, conn, _ in self._idle.values()]
        self._idle.clear()
        self.total -= len(gone)
        return gone


__all__ = ["PoolBook", "Take"]
