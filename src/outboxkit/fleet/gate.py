"""The asyncio shell around :class:`~outboxkit.fleet.scheduler.FairScheduler`: outboxes await their
turn to fetch here, and a fetch that outlives its budget gives its slot to the next outbox.

:class:`GatedStore` puts one outbox's store behind the gate: it is the relay's store (the same
loop, pipeline, leases and marks as ``outboxkit relay``), except that ``fetch_pending`` waits for a
turn and reads at most the granted number of rows. Everything else passes straight through.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence

from outboxkit.core.envelope import OutboxEvent
from outboxkit.fleet.scheduler import FairScheduler
from outboxkit.stores.base import DEFAULT_FETCH_MAX_BYTES, Filter, LeaseGrant, Leases, OutboxStore


class Gate:
    def __init__(self, quantum: int, slots: int, budget: float) -> None:
        self.scheduler = FairScheduler(quantum, slots)
        self.budget = budget
        self._waiters: dict[str, asyncio.Future[int]] = {}
        self.turns = 0  # turns granted (for tests and the status line)

    @contextlib.asynccontextmanager
    async def turn(self, name: str, want: int, weight: int = 1) -> AsyncIterator[list[int]]:
        """``async with gate.turn(name, want) as grant``: ``grant[0]`` is the row limit; set
        ``grant[1]`` to the rows taken before leaving (0 if the body failed)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiters[name] = waiter
        self.scheduler.ask(name, want, weight)
        self._dispatch()
        try:
            limit = await waiter
        except BaseException:
            self._waiters.pop(name, None)
            if waiter.done() and not waiter.cancelled():
                # Granted as we were cancelled: give the turn back unused.
                self.scheduler.finished(name, 0)
            else:
                self.scheduler.cancel(name)
            self._dispatch()
            raise
        grant = [limit, 0]
        timer = loop.call_later(self.budget, self._overdue, name)
        try:
            yield grant
        finally:
            timer.cancel()
            self.scheduler.finished(name, grant[1])
            self._dispatch()

    def forget(self, name: str) -> None:
        self.scheduler.forget(name)
        waiter = self._waiters.pop(name, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()
        self._dispatch()

    def _overdue(self, name: str) -> None:
        self.scheduler.overdue(name)
        self._dispatch()

    def _dispatch(self) -> None:
        while (turn := self.scheduler.grant()) is not None:
            self.turns += 1
            waiter = self._waiters.pop(turn.name, None)
            if waiter is None or waiter.done():
                self.scheduler.finished(turn.name, 0)  # nobody waits for it any more
                continue
            waiter.set_result(turn.limit)


class GatedStore:
    """One outbox's store behind the fleet's gate (an :class:`OutboxStore`); wake-ups are the inner
    store's own (PostgreSQL: the shared LISTEN or a backed-off poll; MariaDB: its probe; SQLite:
    data_version)."""

    def __init__(self, inner: OutboxStore, gate: Gate, name: str, weight: int = 1) -> None:
        self.inner = inner
        self.gate = gate
        self.name = name
        self.weight = weight

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def maintain_leases(self, owner: str, held: Leases, ttl: float, *, rebalance: bool) -> LeaseGrant:
        return await self.inner.maintain_leases(owner, held, ttl, rebalance=rebalance)

    async def release_leases(self, owner: str, buckets: Collection[int] | None = None) -> None:
        await self.inner.release_leases(owner, buckets)

    async def fetch_pending(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> Sequence[OutboxEvent]:
        async with self.gate.turn(self.name, limit, self.weight) as grant:
            rows = await self.inner.fetch_pending(grant[0], skip, leases, max_bytes=max_bytes, exclude=exclude)
            grant[1] = len(rows)
        return rows

    async def pending_seqs(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> list[int]:
        return await self.inner.pending_seqs(limit, skip, leases, max_bytes=max_bytes, exclude=exclude)

    async def fetch_rows(self, seqs: Sequence[int]) -> Sequence[OutboxEvent]:
        return await self.inner.fetch_rows(seqs)

    async def fetch_committed(self, ids: Sequence[str]) -> Sequence[OutboxEvent]:
        return await self.inner.fetch_committed(ids)

    async def mark_delivered(self, seqs: Sequence[int], leases: Leases | None = None) -> int:
        return await self.inner.mark_delivered(seqs, leases)

    async def record_failure(self, seq: int, error: str, *, dead: bool, leases: Leases | None = None) -> bool:
        return await self.inner.record_failure(seq, error, dead=dead, leases=leases)

    async def wait_for_new(self, timeout: float) -> None:
        await self.inner.wait_for_new(timeout)

    async def pending_count(self) -> int:
        return await self.inner.pending_count()

    async def oldest_pending_age(self) -> float | None:
        probe = getattr(self.inner, "oldest_pending_age", None)
        if probe is None:
            return None
        age = await probe()
        return None if age is None else float(age)


__all__ = ["Gate", "GatedStore"]
