"""The relay's lease keeper: renews, rebalances and gives back bucket leases on a task of its own,
beside the batches, so a long batch never lets a lease lapse (H6, G6, G8).

Rules it keeps (decisions in ``core.leases``):

* every renewal has a time limit (half the TTL): a lease connection that hangs fails the keeper,
  and the relay reconnects instead of waiting forever;
* the relay trusts its leases only until a deadline on its own clock; a fenced mark (a lease the
  database says is gone) withdraws that trust at once and asks for a renewal now; only a renewal
  asked after the mark restores it, and a renewal whose answer finds trust lapsed (whenever it
  lapsed) wakes the session when it restores it — a session that found it lapsed waits for exactly
  that call;
* a bucket held again at another epoch counts as lost and gained (the session drops what it
  fetched under the old one); renewals come every third of the TTL, every tenth while below the
  fair share;
* surplus buckets are drained, then released — never while their events are in hand (the relay's
  pipeline stops fetching them and says when none of their events is left, :meth:`drained`);
* whoever waits on the relay's behalf also watches this task (:meth:`LeaseKeeper.guard`), so a
  keeper that failed is noticed at once, even by a relay standing by with no bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from outboxkit.core.leases import deadline, fetchable, renew_after, stale, surplus
from outboxkit.errors import UnavailableError
from outboxkit.relay.observer import RelayObserver
from outboxkit.stores.base import OutboxStore

log = logging.getLogger("outboxkit.relay")
T = TypeVar("T")


class LeaseKeeper:
    def __init__(
        self,
        store: OutboxStore,
        owner: str,
        ttl: float,
        observer: RelayObserver,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.on_change = on_change or (lambda: None)
        self.owner = owner
        self.ttl = ttl
        self.observer = observer
        self.leases: dict[int, int] = {}
        self.handovers = 0
        self.changed = asyncio.Event()  # leases gained, lost or trusted again
        self._wake = asyncio.Event()
        self._deadline = 0.0
        self._doubt = False
        self._doubts = 0  # fenced marks so far: a renewal asked before the last one does not clear it
        self._surplus: set[int] = set()
        self._share = 0  # the fair share the last renewal reported
        self._drained: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._standby_said = False

    # -- what the relay asks ----------------------------------------------------------------------
    def usable(self) -> bool:
        """Whether the relay may publish now: it holds buckets and trusts its leases."""
        return bool(self.leases) and not self._doubt and time.monotonic() < self._deadline

    @property
    def surplus(self) -> frozenset[int]:
        """Buckets to give back once drained (nothing of theirs in hand)."""
        return frozenset(self._surplus & self.leases.keys())

    def for_fetch(self) -> dict[int, int]:
        """The leases a fetch reads from: surplus buckets take no new work."""
        return fetchable(self.leases, self._surplus)

    def drained(self, buckets: set[int]) -> None:
        """None of these surplus buckets' events is in hand any more: release them (by the keeper's
        task, so a renewal and a release never race)."""
        new = (buckets & self._surplus & self.leases.keys()) - self._drained
        if new:
            self._drained |= new
            self._wake.set()

    def doubt(self) -> None:
        """A mark was fenced: the database says a lease of ours is gone. Stop publishing until a
        renewal says which buckets are still ours, and ask for it now."""
        self._doubt = True
        self._doubts += 1
        self._wake.set()

    def deadline_in(self) -> float:
        """Seconds until the leases stop being trusted by this relay's clock (negative: past)."""
        return self._deadline - time.monotonic()

    # -- running ----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.renew()
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(lambda _: self.on_change())  # a failure must wake the relay

    async def stop(self, *, release: bool) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if release:
            # Clean exit: hand the buckets over now instead of after the TTL.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release_leases(self.owner), self.ttl / 2)
            self.leases = {}

    def check(self) -> None:
        """Re-raise the keeper's failure (database gone, renewal timed out): the relay reconnects."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            exc = self._task.exception()
            if exc is not None:
                raise exc

    async def guard(self, work: Awaitable[T]) -> T:
        """Await ``work`` while watching the keeper; if the keeper fails first, cancel ``work`` and
        raise the keeper's error."""
        task = asyncio.ensure_future(work)
        if self._task is None:
            return await task
        try:
            await asyncio.wait({task, self._task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        # The work may be stuck on the same dead connection; the relay closes it next, which ends it.
        await asyncio.wait({task}, timeout=5)
        self.check()
        raise UnavailableError("lease keeper stopped")  # pragma: no cover - check() raised

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), renew_after(len(self.leases), self._share, self.ttl))
            self._wake.clear()
            if self._drained:
                await self._release(self._drained & self.leases.keys())
            await self.renew()

    async def _release(self, buckets: set[int]) -> None:
        self._drained = set()
        if not buckets:
            return
        await self._limit(self.store.release_leases(self.owner, buckets), "lease release")
        self.leases = {b: e for b, e in self.leases.items() if b not in buckets}
        self._surplus -= buckets
        log.info("relay %s released %d drained buckets, now %d", self.owner, len(buckets), len(self.leases))
        self.observer.set_leases(len(self.leases))
        self.changed.set()
        self.on_change()

    async def renew(self) -> None:
        sent = time.monotonic()
        before = self.leases
        doubts = self._doubts
        grant = await self._limit(
            self.store.maintain_leases(self.owner, before, self.ttl, rebalance=True), "lease renewal"
        )
        # Trust as it stands now, when the answer is in, not as it stood when the request left: it
        # may have lapsed meanwhile (the local deadline passed, a mark was fenced), and a session
        # that found it lapsed sleeps until this call says it is back. Judged before the request,
        # such a lapse went unannounced and the relay published nothing more until its leases
        # changed (the lab's inline+relay stall, 90 s and more).
        trusted = self.usable()
        held = grant.held
        self._deadline = deadline(sent, self.ttl)
        gained, lost = held.keys() - before.keys(), before.keys() - held.keys()
        # Held before and now, but at another epoch: lost and taken again in one round (paused
        # past the lease meanwhile). The session withdraws what it fetched under the old epoch.
        regained = stale(before, held) - lost
        self.leases = held
        self._surplus = surplus(held, grant.share)
        self._share = grant.share
        self.observer.db_ok()
        self.observer.set_leases(len(held))
        if not held:
            # A relay standing by has nothing to send: it counts as fine on the broker side too.
            self.observer.broker_ok()
        if self._doubts == doubts:
            # A mark fenced after the request left is not answered by it (the lease may have gone
            # after the database read it): the doubt stays, and the renewal it asked for decides.
            self._doubt = False
        if gained or regained:
            self.handovers += len(gained) + len(regained)
            self.observer.handover(len(gained) + len(regained))
        if gained or lost or regained:
            log.info(
                "relay %s leases: +%d -%d, %d at a new epoch, now %d",
                self.owner, len(gained), len(lost), len(regained), len(held),
            )  # fmt: skip
        if not held and (before or not self._standby_said):
            log.warning("no bucket free for relay %s (others hold them); standing by", self.owner)
            self._standby_said = True
        elif held and not before and self._standby_said:
            log.warning("relay %s now holds %d buckets", self.owner, len(held))
            self._standby_said = False
        if gained or lost or regained or not trusted:
            self.changed.set()
            self.on_change()

    async def _limit(self, work: Awaitable[T], what: str) -> T:
        """``work`` within half the TTL. On time-out the work is cancelled but not awaited: a driver
        may spend seconds trying to cancel a query on a connection that no longer answers, and the
        relay is about to close that connection anyway."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.ttl / 2)
        if task in done:
            return task.result()
        task.cancel()
        task.add_done_callback(_retrieve)
        raise UnavailableError(f"{what} got no answer within {self.ttl / 2:.1f}s")


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned renewal's error is not news
