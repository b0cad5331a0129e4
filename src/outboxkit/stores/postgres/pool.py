"""Connections shared by many outboxes on one PostgreSQL server (the relay fleet, docs/fleet.md).

* :class:`ServerPool` — at most ``limit`` connections to one server (host, port, user), whatever
  the number of databases and outboxes on it. Outboxes in schemas of one database share its
  connections; outboxes in many databases (database-per-tenant) take turns, the least recently
  used idle connection closing to make room (decisions: ``core.pool.PoolBook``).
* :class:`Listener` — one LISTEN connection per database, whatever the number of outboxes in it:
  each outbox's channel is LISTENed on it and a notification wakes only that outbox. At most
  ``listen_max`` per server; beyond that, outboxes poll with a backoff.
* :class:`PgConnections` — the fleet's registry of both, by server and by database.

A connection is lent for one operation (one statement, or one transaction) and comes back idle
at its end, so no transaction ever spans two borrowers. A connection that failed, or was lent to
an operation that was cancelled mid-statement, is closed instead of coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from outboxkit.core.pool import PoolBook

log = logging.getLogger("outboxkit.fleet")

Conn = psycopg.AsyncConnection[Any]
Opener = Callable[[str], Awaitable[Conn]]

#: Idle pooled connections older than this are closed: an idle fleet holds none of them.
MAX_IDLE_S = 30.0
#: How long the listener waits for notifications before it looks at (UN)LISTEN requests.
LISTEN_TICK_S = 0.2


def server_of(url: str) -> tuple[str, str, str]:
    """(host, port, user) of a libpq URL: the connections one server's bound counts."""
    info = conninfo_to_dict("postgresql://" + url.split("://", 1)[1])
    return (str(info.get("host", "")), str(info.get("port", "5432")), str(info.get("user", "")))


class ServerPool:
    def __init__(self, limit: int, opener: Opener) -> None:
        self.book: PoolBook[Conn] = PoolBook(limit)
        self.opener = opener
        self._waiters: deque[tuple[Hashable, asyncio.Future[Conn | None]]] = deque()
        self.opened = 0  # connections opened so far (for the benchmark and tests)

    @property
    def limit(self) -> int:
        return self.book.limit

    async def acquire(self, url: str, setup: str | None = None) -> Conn:
        key = (url, setup)
        # First come, first served: nobody overtakes a waiter.
        decision = self.book.take(key) if not self._waiters else None
        if decision is None or decision.wait:
            fut: asyncio.Future[Conn | None] = asyncio.get_running_loop().create_future()
            self._waiters.append((key, fut))
            try:
                reused = await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    got = fut.result()
                    if got is not None:
                        self.release(key, got)
                    else:
                        self.book.lost()  # the place reserved for us to open
                        self._serve()
                with contextlib.suppress(ValueError):
                    self._waiters.remove((key, fut))
                raise
            if reused is not None:
                return reused
            return await self._open(url, setup, None)
        if decision.reuse is not None:
            return decision.reuse
        return await self._open(url, setup, decision.evict)

    async def _open(self, url: str, setup: str | None, evict: Conn | None) -> Conn:
        if evict is not None:
            with contextlib.suppress(Exception):
                await evict.close()
        try:
            conn = await self.opener(url)
            if setup:
                await conn.execute(setup)
        except BaseException:
            self.book.lost()
            self._serve()
            raise
        self.opened += 1
        return conn

    def release(self, key: Hashable, conn: Conn, *, broken: bool = False) -> None:
        if broken or conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            self.book.lost()
            _close_later(conn)
        else:
            self.book.give(key, conn, time.monotonic())
        for old in self.book.expire(time.monotonic(), MAX_IDLE_S):
            _close_later(old)
        self._serve()

    def _serve(self) -> None:
        while self._waiters:
            key, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            decision = self.book.take(key)
            if decision.wait:
                return
            self._waiters.popleft()
            if decision.reuse is not None:
                fut.set_result(decision.reuse)
            else:
                if decision.evict is not None:
                    _close_later(decision.evict)
                fut.set_result(None)  # a place is reserved: the waiter opens it

    @contextlib.asynccontextmanager
    async def borrow(self, url: str, setup: str | None = None) -> AsyncIterator[Conn]:
        """A connection for one operation. After an error it comes back only if it is idle and
        open (``release`` checks); after a cancellation, never: a statement may be mid-flight."""
        conn = await self.acquire(url, setup)
        try:
            yield conn
        except Exception:
            self.release((url, setup), conn)
            raise
        except BaseException:
            self.release((url, setup), conn, broken=True)
            raise
        else:
            self.release((url, setup), conn)

    async def close(self) -> None:
        for conn in self.book.drain():
            await _close_quietly(conn)

    def tidy(self) -> None:
        """Close idle connections past their age (called by the fleet now and then)."""
        for old in self.book.expire(time.monotonic(), MAX_IDLE_S):
            _close_later(old)


async def _close_quietly(conn: Conn) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


_closing: set[asyncio.Task[None]] = set()


def _close_later(conn: Conn) -> None:
    """Close ``conn`` in the background (a reference is kept until it is done)."""
    task = asyncio.ensure_future(_close_quietly(conn))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class Listener:
    """One LISTEN connection for one database; outboxes register their channel and an event.

    Each tick (``LISTEN_TICK_S``) it brings its LISTENs in line with the registered channels, and
    sets the events of the channels it has just begun to LISTEN on: a row committed before that
    moment is found by the fetch the event starts, one committed after it sends a notification.
    Until then (and while the connection is down) the outbox polls (:meth:`listening`)."""

    def __init__(self, url: str, opener: Opener) -> None:
        self.url = url
        self.opener = opener
        self.channels: dict[str, set[asyncio.Event]] = {}
        self._listened: set[str] = set()
        self.live = False
        self._task: asyncio.Task[None] | None = None

    def listening(self, channel: str) -> bool:
        return self.live and channel in self._listened

    def register(self, channel: str, event: asyncio.Event) -> None:
        self.channels.setdefault(channel, set()).add(event)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    def unregister(self, channel: str, event: asyncio.Event) -> None:
        events = self.channels.get(channel)
        if events is not None:
            events.discard(event)
            if not events:
                del self.channels[channel]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.live = False

    def _wake(self, channels: Iterable[str]) -> None:
        for channel in channels:
            for event in self.channels.get(channel, ()):
                event.set()

    async def _reconcile(self, conn: Conn) -> None:
        for channel in sorted(set(self.channels) - self._listened):
            await conn.execute(f'LISTEN "{channel}"')
            self._listened.add(channel)
            self._wake([channel])
        for channel in sorted(self._listened - set(self.channels)):
            await conn.execute(f'UNLISTEN "{channel}"')
            self._listened.discard(channel)

    async def _run(self) -> None:
        attempt = 0
        while self.channels:
            conn: Conn | None = None
            try:
                conn = await self.opener(self.url)
                self._listened = set()
                self.live, attempt = True, 0
                while self.channels:
                    await self._reconcile(conn)
                    async for note in conn.notifies(timeout=LISTEN_TICK_S):
                        self._wake([note.channel])
            except Exception as exc:
                attempt += 1
                if attempt == 1:
                    log.warning("LISTEN connection lost (%s); its outboxes poll until it is back", exc)
                self.live = False
                self._wake(list(self.channels))
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
            finally:
                self.live = False
                self._listened = set()
                if conn is not None:
                    await _close_quietly(conn)


class PgConnections:
    """The fleet's PostgreSQL connections: one :class:`ServerPool` per server, one
    :class:`Listener` per database (at most ``listen_max`` per server)."""

    def __init__(self, limit: int, listen_max: int, opener: Opener) -> None:
        self.limit = limit
        self.listen_max = listen_max
        self.opener = opener
        self.pools: dict[tuple[str, str, str], ServerPool] = {}
        self.listeners: dict[str, Listener] = {}

    def pool(self, url: str) -> ServerPool:
        server = server_of(url)
        pool = self.pools.get(server)
        if pool is None:
            pool = self.pools[server] = ServerPool(self.limit, self.opener)
        return pool

    def listener(self, url: str) -> Listener | None:
        """The database's listener, or None when the server's LISTEN budget is spent."""
        found = self.listeners.get(url)
        if found is not None:
            return found
        server = server_of(url)
        if sum(1 for u in self.listeners if server_of(u) == server) >= self.listen_max:
            return None
        listener = self.listeners[url] = Listener(url, self.opener)
        return listener

    def connections(self) -> int:
        """Connections open now (pooled, busy or idle, plus live listeners)."""
        return sum(p.book.total for p in self.pools.values()) + sum(1 for lst in self.listeners.values() if lst.live)

    async def close(self) -> None:
        for listener in self.listeners.values():
            await listener.close()
        for pool in self.pools.values():
            await pool.close()


__all__ = ["MAX_IDLE_S", "Listener", "PgConnections", "ServerPool", "server_of"]
