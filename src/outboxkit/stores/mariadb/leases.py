"""MariaDB/MySQL: bucket leases (H6), on the database's clock.

Every time here is ``UTC_TIMESTAMP(6)`` of the server, never a relay's clock, so clock skew between
relay hosts cannot let two relays hold a bucket. Statements run through ``run`` on the store's lease
connection, inside one transaction per round (the store opens and commits it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from outboxkit.core.leases import adopt
from outboxkit.stores.base import BUCKETS, LeaseGrant, Leases
from outboxkit.stores.mariadb.schema import bind_list

Run = Callable[..., Awaitable[list[tuple[Any, ...]]]]


async def maintain(
    run: Run, leases: str, relays: str, owner: str, held: Leases, ttl: float, rebalance: bool
) -> LeaseGrant:
    """Heartbeat, renew, and (``rebalance``) acquire up to the fair share, inside the caller's
    transaction (READ COMMITTED, so the locking reads below see the latest commits)."""
    micros = int(ttl * 1_000_000)
    await run(
        f"INSERT INTO {relays} (owner, heartbeat_at, started_at) VALUES (%s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))"
        " ON DUPLICATE KEY UPDATE heartbeat_at = UTC_TIMESTAMP(6)",
        (owner,),
    )
    # Renew what we still hold and has not expired. An expired lease is not renewed even if
    # nobody took it: it is re-acquired below with a new epoch, so marks under the old one stay
    # fenced. (No UPDATE ... RETURNING here: read the rows back, locked, in this transaction.)
    await run(
        f"UPDATE {leases} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND"
        " WHERE owner = %s AND expires_at > UTC_TIMESTAMP(6)",
        (micros, owner),
    )
    rows = await run(
        f"SELECT bucket, epoch FROM {leases} WHERE owner = %s AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE",
        (owner,),
    )
    now_held = {int(b): int(e) for b, e in rows}
    back = adopt(held, now_held)
    if back:
        # Ours by name but not held at that epoch (an earlier process of this owner, restarted by
        # its supervisor): taken back now, at a new epoch, so its in-flight marks are fenced.
        in_back, params = bind_list("b", sorted(back))
        await run(
            f"UPDATE {leases} SET epoch = epoch + 1 WHERE owner = %(owner)s AND bucket IN ({in_back})",
            {"owner": owner, **params},
        )
        got = await run(f"SELECT bucket, epoch FROM {leases} WHERE bucket IN ({in_back})", params)
        now_held.update({int(b): int(e) for b, e in got})
    if not rebalance:
        return LeaseGrant(now_held, max(len(now_held), 1))
    (live,) = (await run(
        f"SELECT COUNT(*) FROM {relays} WHERE heartbeat_at > UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND",
        (micros,),
    ))[0]  # fmt: skip
    share = -(-BUCKETS // max(1, int(live)))  # ceil
    # Buckets beyond the share are not released here: the relay drains them first (nothing of
    # theirs in flight), then calls release_leases, so the next owner never re-sends what this
    # relay already published (G6).
    if len(now_held) < share:
        # SKIP LOCKED: two relays acquiring at once split the free buckets between them. The
        # rows stay locked until COMMIT, so the UPDATE below cannot race another relay.
        free = await run(
            f"SELECT bucket FROM {leases} WHERE expires_at IS NULL OR expires_at <= UTC_TIMESTAMP(6)"
            " ORDER BY bucket LIMIT %s FOR UPDATE SKIP LOCKED",
            (share - len(now_held),),
        )
        if free:
            in_taken, params = bind_list("b", [int(r[0]) for r in free])
            await run(
                f"UPDATE {leases} SET owner = %(owner)s, epoch = epoch + 1,"
                f" expires_at = UTC_TIMESTAMP(6) + INTERVAL %(us)s MICROSECOND WHERE bucket IN ({in_taken})",
                {"owner": owner, "us": micros, **params},
            )
            got = await run(f"SELECT bucket, epoch FROM {leases} WHERE bucket IN ({in_taken})", params)
            now_held.update({int(b): int(e) for b, e in got})
    # Forget relays long gone, so "live" stays right.
    await run(
        f"DELETE FROM {relays} WHERE heartbeat_at < UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND",
        (int(max(60.0, 10 * ttl) * 1_000_000),),
    )
    return LeaseGrant(now_held, share)


async def release(run: Run, leases: str, relays: str, owner: str, buckets: Collection[int] | None) -> None:
    """Give ``buckets`` of ``owner`` back (all of them and the heartbeat row when ``None``: a clean
    shutdown), so other relays take them over now instead of after the TTL."""
    if buckets is None:
        await run(f"UPDATE {leases} SET owner = NULL, expires_at = NULL WHERE owner = %s", (owner,))
        await run(f"DELETE FROM {relays} WHERE owner = %s", (owner,))
    elif buckets:
        in_buckets, params = bind_list("b", sorted(buckets))
        await run(
            f"UPDATE {leases} SET owner = NULL, expires_at = NULL WHERE owner = %(owner)s AND bucket IN ({in_buckets})",
            {"owner": owner, **params},
        )
