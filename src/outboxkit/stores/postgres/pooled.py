"""The PostgreSQL relay store on shared connections (the relay fleet, docs/fleet.md).

Same SQL, same fencing, same error translation as :class:`PostgresOutboxStore` (it is a subclass);
only where connections come from differs. The plain store keeps four connections of its own (work,
marks, leases, LISTEN); this one borrows from its server's :class:`~.pool.ServerPool` for each
operation and LISTENs through its database's shared :class:`~.pool.Listener`:

* at most one work, one mark and one lease operation of this outbox run at once (as on the plain
  store's three connections), so one outbox holds at most three pooled connections, and fewer
  most of the time: an idle outbox holds none between its lease renewals;
* a lease transaction runs on one borrowed connection from BEGIN to COMMIT, so no other outbox's
  statement ever lands inside it;
* marks commit with ``synchronous_commit = off`` (``SET LOCAL`` in their own transaction), as on the
  plain store's marks connection (a mark lost in a crash only re-sends the row, G6);
* without a LISTEN (the server's LISTEN budget spent, or the listener reconnecting) the outbox polls
  with a backoff: soon after rows came, then doubling up to the relay's poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Sequence
from typing import Any

import psycopg

from outboxkit.core.backoff import backoff_delay
from outboxkit.core.envelope import OutboxEvent
from outboxkit.stores.base import DEFAULT_FETCH_MAX_BYTES, Filter, LeaseGrant, Leases, TableRef
from outboxkit.stores.postgres.pool import Listener, PgConnections, ServerPool
from outboxkit.stores.postgres.store import PostgresOutboxStore, translate

MARKS_SETUP = "SET LOCAL synchronous_commit = off"


class PooledPostgresStore(PostgresOutboxStore):
    def __init__(
        self,
        url: str,
        ref: TableRef | None,
        connections: PgConnections,
        *,
        hold_dead_keys: bool = True,
        application_name: str = "outboxkit-fleet",
    ) -> None:
        super().__init__(url, ref, hold_dead_keys=hold_dead_keys, application_name=application_name)
        self.connections = connections
        self.pool: ServerPool = connections.pool(url)
        self._shared_listen: Listener | None = None
        self._work_lock = asyncio.Lock()
        self._mark_lock = asyncio.Lock()
        self._empty = 0  # consecutive empty fetches: the poll backoff without a LISTEN

    @property
    def pushes(self) -> bool:
        """Whether a notification wakes this outbox now (else it polls)."""
        return self._shared_listen is not None and self._shared_listen.listening(self.ref.channel)

    async def open(self) -> None:
        async with self._work_lock, self.pool.borrow(self.url) as conn:
            await self._check_schema(conn)
        listener = self.connections.listener(self.url)
        if listener is not None:
            self._shared_listen = listener
            listener.register(self.ref.channel, self._woken)

    async def close(self) -> None:
        if self._shared_listen is not None:
            self._shared_listen.unregister(self.ref.channel, self._woken)
            self._shared_listen = None

    async def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        try:
            async with self._work_lock, self.pool.borrow(self.url) as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    async def _count(self, sql: str, params: Any, conn: psycopg.AsyncConnection[Any] | None = None) -> int:
        try:
            if conn is not None:
                cur = await conn.execute(sql, params)
                return int(cur.rowcount)
            async with self._work_lock, self.pool.borrow(self.url) as work:
                cur = await work.execute(sql, params)
                return int(cur.rowcount)
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    async def fetch_pending(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> Sequence[OutboxEvent]:
        rows = await super().fetch_pending(limit, skip, leases, max_bytes=max_bytes, exclude=exclude)
        self._empty = 0 if rows else self._empty + 1
        return rows

    async def mark_delivered(self, seqs: Sequence[int], leases: Leases | None = None) -> int:
        if not seqs:
            return 0
        try:
            async with self._mark_lock, self.pool.borrow(self.url) as conn, conn.transaction():
                # Only this transaction commits without waiting for its WAL flush (the plain store
                # sets it on its marks connection): pooled connections are all alike, so none is
                # ever closed to make room for another kind.
                await conn.execute(MARKS_SETUP)
                if leases is None:
                    return await self._count(self._mark_sql, [list(seqs)], conn)
                return await self._count(self._mark_fenced_sql, {"seqs": list(seqs), **self._fence(leases)}, conn)
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    async def maintain_leases(self, owner: str, held: Leases, ttl: float, *, rebalance: bool) -> LeaseGrant:
        self.owner = owner
        try:
            async with self._lease_lock, self.pool.borrow(self.url) as conn:
                return await self._maintain(conn, owner, held, ttl, rebalance=rebalance)
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    async def release_leases(self, owner: str, buckets: Collection[int] | None = None) -> None:
        try:
            async with self._lease_lock, self.pool.borrow(self.url) as conn:
                await self._release(conn, owner, buckets)
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    async def wait_for_new(self, timeout: float) -> None:
        if not self.pushes:
            # Polled: soon after rows came, then backing off to the relay's interval while idle.
            timeout = min(timeout, backoff_delay(self._empty, base=0.05, cap=timeout) if self._empty else 0.05)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()


__all__ = ["PooledPostgresStore"]


class PooledStores:
    """The relay stores of many outboxes on one process's bounded connections (the relay fleet):
    at most ``max_connections`` pooled connections per server plus ``listen_max`` LISTEN ones."""

    def __init__(self, max_connections: int, listen_max: int) -> None:
        from outboxkit.stores.postgres.store import connect_relay

        async def opener(url: str) -> Any:
            return await connect_relay(url, "outboxkit-fleet")

        self.pg = PgConnections(max_connections, listen_max, opener)

    def store(self, url: str, ref: TableRef) -> PostgresOutboxStore:
        from outboxkit.stores.postgres.connection import libpq_url

        return PooledPostgresStore(libpq_url(url), ref, self.pg)

    def tidy(self) -> None:
        for pool in self.pg.pools.values():
            pool.tidy()

    def connections(self) -> int:
        return self.pg.connections()

    async def close(self) -> None:
        await self.pg.close()
