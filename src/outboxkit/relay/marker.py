"""Marking confirmed rows in the background (G3, H6).

Whatever confirmations accumulated during the last round trip go out as one UPDATE, so marking
overlaps publishing instead of pausing it. Marks are fenced by the lease epochs in force when the
UPDATE is sent: one that updates fewer rows than it was given means a lease is gone, and the lease
keeper is told at once so the relay stops publishing until it knows which buckets are still its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from outboxkit.relay.observer import RelayObserver
from outboxkit.stores.base import Leases, OutboxStore

#: Marks a batch row by row after its mark failed with the given exception; returns rows settled.
OneByOne = Callable[[Sequence[int], Leases | None, BaseException], Awaitable[int]]


class Marker:
    def __init__(
        self,
        store: OutboxStore,
        leases: Callable[[], Leases | None],
        observer: RelayObserver,
        on_fenced: Callable[[int], None],
        on_marked: Callable[[Sequence[int]], None] = lambda _: None,
        one_by_one: OneByOne | None = None,
    ) -> None:
        self.store = store
        self.leases = leases
        self.observer = observer
        self.on_fenced = on_fenced
        self.on_marked = on_marked
        self.one_by_one = one_by_one
        self.buffer: list[int] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.error: BaseException | None = None

    def add(self, seq: int) -> None:
        self.buffer.append(seq)
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.buffer:
                if self.closing:
                    return
                await self.wake.wait()
                self.wake.clear()
                continue
            batch, self.buffer = self.buffer, []
            leases = self.leases()
            try:
                marked = await self.store.mark_delivered(batch, leases)
            except Exception as exc:
                if self.one_by_one is None:
                    self.error = exc
                    return
                # H13: a batch that cannot be marked is marked row by row; a row that fails alone
                # is set aside, so no row's mark fails the session again and again. An outage is
                # re-raised there and ends the session as before.
                try:
                    marked = await self.one_by_one(batch, leases, exc)
                except Exception as again:
                    self.error = again
                    return
            self.observer.db_ok()
            if marked < len(batch):
                # Fenced: our lease on some bucket ended (paused past the TTL, or taken over). The
                # new owner publishes those rows again; consumers de-duplicate by id.
                self.observer.fenced(len(batch) - marked)
                self.on_fenced(len(batch) - marked)
            self.on_marked(batch)

    def start(self, on_exit: Callable[[object], None] | None = None) -> None:
        self.task = asyncio.create_task(self.run())
        if on_exit is not None:
            # A mark failure must wake whoever waits, so the session ends and reconnects.
            self.task.add_done_callback(on_exit)

    @property
    def failed(self) -> BaseException | None:
        return self.error

    async def drain(self) -> None:
        """Wait until every added seq is marked; re-raise a mark failure."""
        self.closing = True
        self.wake.set()
        if self.task is not None:
            await self.task
        if self.error is not None:
            raise self.error

    async def abort(self) -> None:
        """Stop without waiting for marks (the session failed: the store is about to close)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({self.task}, timeout=1)
