"""Marking confirmed rows in the background (G3, H6).

Whatever confirmations accumulated during the last round trip go out as one UPDATE, so marking
overlaps publishing instead of pausing it. Marks are fenced by the lease epochs in force when the
UPDATE is sent: one that updates fewer rows than it was given means a lease is gone, and the lease
keeper is told at once so the relay stops publishing until it knows which buckets are still its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from outboxkit.relay.observer import RelayObserver
from outboxkit.stores.base import Leases, OutboxStore


class Marker:
    def __init__(
        self,
        store: OutboxStore,
        leases: Callable[[], Leases | None],
        observer: RelayObserver,
        on_fenced: Callable[[int], None],
        on_marked: Callable[[Sequence[int]], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.leases = leases
        self.observer = observer
        self.on_fenced = on_fenced
        self.on_marked = on_marked
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
            try:
                marked = await self.store.mark_delivered(batch, self.leases())
            except Exception as exc:
                self.error = exc
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
