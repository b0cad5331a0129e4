"""Fair shares of the fleet's fetches: deficit round robin by events, without I/O.

The policy (docs/fleet.md):

* **What is shared.** A fetch is the unit of work an outbox asks for: it reads up to ``limit``
  pending rows, which the outbox's relay then publishes and marks. At most ``slots`` fetches run at
  once across the fleet; the outboxes that want one wait in one round-robin queue.
* **Deficit round robin by events.** When an outbox's turn comes, ``quantum x weight`` events are
  added to its deficit and it may fetch up to that many (never more than it asked for). What it
  actually took is subtracted. An outbox that took fewer rows than it was allowed has emptied its
  backlog: its deficit goes back to 0, so an idle outbox banks no credit to burst with later.
  An outbox that wants more joins the back of the queue. So a tenant with a million pending rows
  gets one turn of ``quantum`` events per round, like every other tenant with work, and a tenant
  that wakes up waits for at most one turn of each outbox ahead of it (bounded wait).
* **A slow fetch gives its slot away.** A fetch that runs past its budget (a slow or hung
  database) is *overdue*: its slot goes to the next outbox at once. The overdue outbox cannot ask
  again before its fetch returns (one fetch per outbox at a time), so a slow tenant holds at most
  itself up.
* **Idle costs nothing here.** An outbox that does not ask is in no queue and holds no state but
  its deficit (0).

Unit-tested exhaustively in tests/unit/test_fleet_scheduler.py; ``fleet.gate`` is the asyncio shell.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Turn:
    """A grant: ``name`` may fetch up to ``limit`` events now."""

    name: str
    limit: int


class FairScheduler:
    def __init__(self, quantum: int, slots: int) -> None:
        if quantum < 1 or slots < 1:
            raise ValueError("quantum and slots must be at least 1")
        self.quantum = quantum
        self.slots = slots
        self._queue: deque[str] = deque()
        self._want: dict[str, tuple[int, int]] = {}  # name -> (events asked, weight), while queued
        self._deficit: dict[str, int] = {}
        self._limit: dict[str, tuple[int, int]] = {}  # name -> (limit, weight) of its running turn
        self._holding: set[str] = set()  # running turns that still hold a slot (not overdue)

    # -- what outboxes tell ----------------------------------------------------------------------
    def ask(self, name: str, want: int, weight: int = 1) -> None:
        """``name`` wants to fetch up to ``want`` events. Asking twice, or while its turn runs, is a
        caller's bug: an outbox fetches one batch at a time."""
        if name in self._want or name in self._limit:
            raise ValueError(f"{name} already asked or is fetching")
        if want < 1 or weight < 1:
            raise ValueError("want and weight must be at least 1")
        self._want[name] = (want, weight)
        self._queue.append(name)

    def cancel(self, name: str) -> None:
        """``name`` no longer waits (stopped); its deficit is kept only while it runs."""
        if self._want.pop(name, None) is not None:
            self._queue.remove(name)

    def finished(self, name: str, taken: int) -> None:
        """The turn of ``name`` ended having fetched ``taken`` events (0 if it failed)."""
        limit, weight = self._limit.pop(name)
        self._holding.discard(name)
        deficit = self._deficit.pop(name, 0) - max(0, taken)
        # Fewer than allowed: the backlog is empty (or the fetch failed), so no credit is banked.
        # Still backlogged: the unused part carries over, at most one quantum (classic DRR).
        if taken >= limit and deficit > 0:
            self._deficit[name] = min(deficit, self.quantum * weight)

    def overdue(self, name: str) -> None:
        """The turn of ``name`` ran past its budget: its slot goes to the next outbox."""
        self._holding.discard(name)

    def forget(self, name: str) -> None:
        """``name`` left the fleet."""
        self.cancel(name)
        self._limit.pop(name, None)
        self._holding.discard(name)
        self._deficit.pop(name, None)

    # -- what the shell asks -----------------------------------------------------------------------
    def grant(self) -> Turn | None:
        """The next turn, if a slot is free and an outbox waits; call until it returns None."""
        if len(self._holding) >= self.slots or not self._queue:
            return None
        name = self._queue.popleft()
        want, weight = self._want.pop(name)
        deficit = self._deficit.get(name, 0) + self.quantum * weight
        limit = min(want, deficit)
        self._deficit[name] = deficit
        self._limit[name] = (limit, weight)
        self._holding.add(name)
        return Turn(name, limit)

    @property
    def waiting(self) -> tuple[str, ...]:
        return tuple(self._queue)

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._limit)

    def deficit(self, name: str) -> int:
        return self._deficit.get(name, 0)


__all__ = ["FairScheduler", "Turn"]
