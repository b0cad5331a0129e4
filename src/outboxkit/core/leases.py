"""Lease decisions of one relay, without I/O: which buckets to give back, and whether the leases it
holds may still be trusted by its own clock (H6, G6).

* **Drain, then release.** A relay over its fair share does not give buckets back while events of
  theirs are in flight: the next owner would publish them again (duplicates with no fault at all).
  It stops taking new work from the surplus buckets, and releases them once a batch that excluded
  them started (so every earlier batch, the only ones that could hold their events, is finished).
* **A local deadline.** The database decides when a lease expires (``expires_at`` on its clock), and
  every mark is fenced there. But a relay paused past its lease (SIGSTOP, a long GC, a frozen VM)
  would go on *publishing* events of buckets that already belong to another relay. So each relay
  also keeps a deadline by its own monotonic clock, counted from when it *sent* the renewal (the
  earliest moment the database can have started the TTL), minus a margin; past it, it publishes
  nothing until a renewal succeeds.
* **Take your own back.** A relay started again under the same owner name (its supervisor names it)
  finds the buckets its predecessor held and takes them back at once instead of leaving them to
  expire — at a new epoch, so anything a predecessor that is somehow still alive has in flight is
  fenced (two live relays under one name is a configuration error, and this keeps it safe).
* **Come back soon when short.** A relay below its fair share renews more often, so buckets that
  are freed (released after draining, or expired with a dead relay) are taken within a fraction of
  the TTL, not a third of it.
* **A lease is a bucket at an epoch.** A relay paused past its lease can get a bucket back at a new
  epoch in one renewal (another relay took it meanwhile, published its newer events, and gave it
  back or died). Rows it fetched under the old epoch may be ones the other relay already sent:
  published now, they would follow the newer events of their key (G5). So a bucket whose epoch
  changed counts as lost *and* gained: its rows in hand are withdrawn and fetched again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

#: Fraction of the TTL a relay trusts its lease for, from the moment it sent the renewal. The rest
#: absorbs clock-rate differences and the time between the database's now() and our send.
TRUST = 0.8


def surplus(held: Mapping[int, int], share: int) -> set[int]:
    """The buckets to give back when holding more than ``share``: the highest-numbered ones, so
    every relay agrees which buckets move and a bucket does not flap between relays."""
    if len(held) <= share:
        return set()
    return set(sorted(held)[max(share, 0) :])


def deadline(sent_at: float, ttl: float) -> float:
    """Until when (same clock as ``sent_at``) leases renewed by a request sent at ``sent_at`` hold."""
    return sent_at + ttl * TRUST


def fetchable(held: Mapping[int, int], draining: Collection[int]) -> dict[int, int]:
    """The leases a new batch may read from: every held bucket except those being drained."""
    return {bucket: epoch for bucket, epoch in held.items() if bucket not in draining}


def stale(before: Mapping[int, int], after: Mapping[int, int]) -> set[int]:
    """Buckets whose rows fetched under ``before`` may no longer be published under ``after``:
    the ones lost, and the ones held again at another epoch."""
    return {bucket for bucket, epoch in before.items() if after.get(bucket) != epoch}


def adopt(held: Mapping[int, int], renewed: Mapping[int, int]) -> set[int]:
    """Buckets the lease table gives this owner that the relay does not hold at that epoch: left by
    an earlier process or session under the same name. They are taken back at a new epoch."""
    return {bucket for bucket, epoch in renewed.items() if held.get(bucket) != epoch}


#: Renewal period as a fraction of the TTL: normally, and while below the fair share.
RENEW_EVERY, RENEW_SHORT = 1 / 3, 1 / 10


def renew_after(held: int, share: int, ttl: float) -> float:
    """Seconds until the next renewal. Below ``share - 1`` (under the fair floor whatever the
    rounding: ``share`` is 64 / live relays rounded up) there are buckets to take as soon as they
    are free, so the relay asks again soon; at its share it renews every third of the TTL."""
    return ttl * (RENEW_SHORT if held < share - 1 else RENEW_EVERY)
