"""MariaDB/MySQL: the relay's store on asyncmy.

The rules it keeps, and the guarantee each serves:

* **No cursor (H1).** ``AUTO_INCREMENT`` values are taken at insert and transactions commit in
  another order. Every fetch starts from the lowest pending seq, so a row committed late with a low
  seq is found by the next fetch.
* **Fresh reads.** Connections run autocommit statements at READ COMMITTED: each fetch sees every
  transaction committed before it, never a REPEATABLE READ snapshot kept from an earlier statement.
* **Fenced marks (H6).** ``mark_delivered`` and ``record_failure`` check the lease in the same
  UPDATE: owner, epoch and an unexpired lease on the database's clock (``UTC_TIMESTAMP(6)``). A
  takeover commits only after the lease expired there, so a mark that passes the check ran while
  the lease was still this relay's; a relay that paused past its lease marks nothing.
* **Leases on the database's clock.** Expiry, renewal and takeover compare with the server's time,
  never a relay's, so clock skew between relay hosts cannot let two relays hold a bucket.

Wake-ups: this database has no LISTEN/NOTIFY. While idle the relay polls a fingerprint of the
pending rows (count and sum of their seqs: one index-only range scan of the pending index, which is
empty or nearly so when the relay keeps up) on an adaptive interval: 2 ms after activity, growing
by half each quiet probe to 50 ms, and to 150 ms once nothing changed for 10 s (an idle relay costs
under 1 % of a core). A commit is noticed within one interval (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.rows import event_from_row
from outboxkit.core.storable import storable
from outboxkit.core.urls import redact_url
from outboxkit.errors import SchemaError, TransientError, UnavailableError
from outboxkit.stores.base import (
    BUCKETS,
    DEFAULT_FETCH_MAX_BYTES,
    SCHEMA_VERSION,
    Filter,
    LeaseGrant,
    Leases,
    TableRef,
)
from outboxkit.stores.mariadb import leases
from outboxkit.stores.mariadb.driver import error_code, first_line, parse_url, session_sql, translate
from outboxkit.stores.mariadb.schema import bind_list, bind_pairs, quoted

_DEADLOCK = 1213

#: Adaptive wake-up polling (seconds): the first probe after activity, and the slowest.
WAKE_MIN_S = 0.002
WAKE_MAX_S = 0.05
#: After this long without a change the probes slow to WAKE_IDLE_S: about 7 a second instead of 20
#: (each costs the relay a round trip and a row decode), at the price of noticing the first commit
#: after a quiet spell within 150 ms instead of 50.
QUIET_S = 10.0
WAKE_IDLE_S = 0.15

# What the relay reads of a row, in the order core.rows.event_from_row takes it, then the bucket.
_COLUMNS = (
    "o.seq, o.id, o.topic, o.`key`, o.type, o.source, o.payload, o.content_type, o.headers, o.created_at,"
    " o.attempts, o.bucket"
)
_PENDING = "o.delivered_at IS NULL AND o.dead_at IS NULL"


def _utc(value: object) -> object:
    # DATETIME(6) columns hold UTC (written with UTC_TIMESTAMP(6)); the driver returns them naive.
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) else value


def _keepalive(conn: Any) -> None:
    """TCP keepalives: a server that vanished without a FIN (partition, powered-off host) is noticed
    in about 10 s instead of the kernel's two hours (psycopg gets the same through libpq)."""
    writer = getattr(conn, "_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is None or getattr(sock, "family", None) != socket.AF_INET:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class MariaDbOutboxStore:
    """Relay store on asyncmy. Two connections: one for fetches and marks, one for leases (the
    keeper runs beside the batches, and a lease transaction must not swallow a batch's statements).
    """

    def __init__(
        self,
        url: str,
        ref: TableRef | None = None,
        *,
        hold_dead_keys: bool = True,
        connect_timeout: float = 5.0,
        lock_wait_s: int = 5,
    ) -> None:
        self.url = url
        self.params = parse_url(url)
        self.ref = ref or TableRef()
        self.hold_dead_keys = hold_dead_keys
        self.connect_timeout = connect_timeout
        self.lock_wait_s = lock_wait_s
        self.owner: str | None = None
        # Three connections, each used by one statement at a time (a lock each: the relay's marker
        # task, its batches and its lease keeper call the store concurrently, and an asyncmy
        # connection must never see two statements interleaved): work (fetch, failures, waits),
        # marks (they overlap the next fetch) and leases.
        self._conn: Any = None
        self._work_lock = asyncio.Lock()
        self._marks: Any = None
        self._marks_lock = asyncio.Lock()
        self._lease: Any = None
        self._lease_lock = asyncio.Lock()
        self._fingerprint: tuple[int, int] | None = None
        self._changed_at = time.monotonic()  # when the fingerprint last changed (or the store opened)
        t, leases = quoted(self.ref), quoted(self.ref, "leases")
        self._leases_table, self._relays_table = leases, quoted(self.ref, "relays")
        hold = (
            f" AND (o.`key` IS NULL OR NOT EXISTS (SELECT 1 FROM {t} d"
            " WHERE d.`key` = o.`key` AND d.dead_at IS NOT NULL))"
            if hold_dead_keys
            else ""
        )

        # No cursor (H1): from the lowest pending seq every time. The pending index's (NULL, NULL)
        # prefix is read in seq order, so this is an index range scan over pending rows only. The
        # running sum bounds a batch by bytes as well as rows; the first row always passes, so one
        # huge row still moves on.
        def bounded(where: str, prefix: str = "", seqs_only: bool = False) -> str:
            # LIMIT first, in the innermost query: this database computes a window function over
            # every row its query finds before applying LIMIT, so a window over the pending scan
            # itself would read every pending row (and payload) on each fetch. seqs_only: the same
            # rows, reading only their seq (narrowing down a fetch that fails on a row, H13).
            cols = "w.seq" if seqs_only else "w.*"
            return (
                f"{prefix}SELECT {cols} FROM (SELECT x.*, SUM(x.size) OVER (ORDER BY x.seq) AS running FROM ("
                f"SELECT {_COLUMNS}, LENGTH(o.payload) AS size FROM {t} o WHERE {_PENDING}{hold}{where}"
                # Rows the relay holds in hand (in flight, or confirmed with the mark on its way):
                # one JSON parameter, materialised once by the optimizer, however many seqs.
                " AND o.seq NOT IN (SELECT h.s FROM JSON_TABLE(%(exclude)s, '$[*]' COLUMNS (s BIGINT PATH '$')) h)"
                " ORDER BY o.seq LIMIT %(limit)s) x) w WHERE w.running - w.size < %(max_bytes)s ORDER BY w.seq"
            )

        self._fetch_sql = bounded("")
        # Several relays: the same scan, keeping the leased buckets (a stored column, no hashing).
        self._fetch_buckets_sql = bounded(" AND o.bucket IN ({buckets})")
        # The relay is waiting on something (paused topics, events in backoff): their rows are left
        # out AND every pending row of a key that has a row on a paused topic or waits for a retry,
        # or that key's later events would overtake the held one (G5). Only in that abnormal state.
        held_where = (
            " AND o.topic NOT IN ({paused}) AND o.seq NOT IN ({held_seqs})"
            " AND (o.`key` IS NULL OR (o.`key` NOT IN (SELECT k.`key` FROM paused_keys k)"
            " AND o.`key` NOT IN ({held_keys})))"
            " AND (%(every)s OR o.bucket IN ({buckets}))"
        )
        paused_keys = (
            f"WITH paused_keys AS (SELECT DISTINCT h.`key` FROM {t} h WHERE h.delivered_at IS NULL"
            " AND h.dead_at IS NULL AND h.topic IN ({paused}) AND h.`key` IS NOT NULL) "
        )
        self._fetch_held_sql = bounded(held_where, prefix=paused_keys)
        # The seqs of what each fetch above would read, and the rows of some seqs (H13).
        self._seqs_sql = bounded("", seqs_only=True)
        self._seqs_buckets_sql = bounded(" AND o.bucket IN ({buckets})", seqs_only=True)
        self._seqs_held_sql = bounded(held_where, prefix=paused_keys, seqs_only=True)
        self._rows_sql = f"SELECT {_COLUMNS} FROM {t} o WHERE o.seq IN ({{seqs}}) AND {_PENDING} ORDER BY o.seq"
        # Inline publishing (the writer, right after its commit): only rows no earlier pending row
        # of the same key precedes, and (with the hold policy) whose key has no dead letter (G5).
        self._committed_sql = (
            f"SELECT {_COLUMNS} FROM {t} o WHERE {_PENDING}{hold} AND o.id IN ({{ids}})"
            f" AND (o.`key` IS NULL OR NOT EXISTS (SELECT 1 FROM {t} p WHERE p.`key` = o.`key` AND p.seq < o.seq"
            " AND p.delivered_at IS NULL AND p.dead_at IS NULL)) ORDER BY o.seq"
        )
        self._mark_sql = (
            f"UPDATE {t} o FORCE INDEX (PRIMARY) SET o.delivered_at = UTC_TIMESTAMP(6)"
            " WHERE o.seq IN ({seqs}) AND o.delivered_at IS NULL"
        )
        # Fencing (H6): a row is marked only while this relay holds its bucket at the epoch it was
        # granted, unexpired on the database's clock. (bucket, epoch) pairs are the leases of the
        # batch; a bucket re-leased since has a higher epoch, so its rows are not marked. The lease
        # is read by a subquery, which READ COMMITTED evaluates as a consistent, non-locking read of
        # the latest committed lease: the check holds at the statement's start, and a takeover can
        # only commit after the lease expired there. (A join would read the lease rows with shared
        # locks and deadlock against the lease keeper's renewal.)
        fence = (
            f" AND EXISTS (SELECT 1 FROM {leases} l WHERE l.bucket = o.bucket AND l.owner = %(owner)s"
            " AND (l.bucket, l.epoch) IN ({fence}) AND l.expires_at > UTC_TIMESTAMP(6))"
        )
        self._mark_fenced_sql = (
            f"UPDATE {t} o FORCE INDEX (PRIMARY) SET o.delivered_at = UTC_TIMESTAMP(6)"
            " WHERE o.seq IN ({seqs}) AND o.delivered_at IS NULL" + fence
        )
        self._fail_sql = (
            f"UPDATE {t} o SET o.attempts = o.attempts + 1, o.last_error = %(error)s,"
            " o.dead_at = CASE WHEN %(dead)s THEN UTC_TIMESTAMP(6) ELSE o.dead_at END WHERE o.seq = %(seq)s"
        )
        self._fail_fenced_sql = self._fail_sql + fence
        # Wake-up fingerprint: changes when a pending row appears (even one with a low seq that
        # committed late) or leaves. An index-only scan of the pending index.
        self._fingerprint_sql = f"SELECT COUNT(*), COALESCE(SUM(o.seq), 0) FROM {t} o WHERE {_PENDING}"

    # -- connections -------------------------------------------------------------------------------
    async def _connect(self) -> Any:
        import asyncmy  # outside the try: a missing extra is a start-up error, not an outage

        try:
            conn = await asyncio.wait_for(
                asyncmy.connect(
                    **self.params.kwargs(),
                    autocommit=True,
                    charset="utf8mb4",
                    connect_timeout=self.connect_timeout,
                    program_name="outboxkit-relay",
                ),
                self.connect_timeout + 1,
            )
            _keepalive(conn)
            async with conn.cursor() as cur:
                for stmt in session_sql(self.lock_wait_s):
                    await asyncio.wait_for(cur.execute(stmt), self.connect_timeout)
            return conn
        except Exception as exc:
            raise UnavailableError(f"MariaDB at {redact_url(self.url)} is unavailable: {first_line(exc)}") from None

    async def open(self) -> None:
        self._conn = await self._connect()
        try:
            rows = await self._run(f"SELECT schema_version FROM {quoted(self.ref, 'meta')}", None)
        except SchemaError:
            raise SchemaError(
                f"outbox table {quoted(self.ref)} not found: run `outboxkit migrate --db URL` first"
            ) from None
        if not rows or int(rows[0][0]) < SCHEMA_VERSION:
            raise SchemaError("outbox schema is older than this outboxkit: run `outboxkit migrate`")
        self._fingerprint = await self._probe()

    async def close(self) -> None:
        for conn in (self._conn, self._lease, self._marks):
            if conn is not None:
                # Closing a dead connection may fail; there is nothing left to do with it.
                with contextlib.suppress(Exception):
                    conn.close()
        self._conn = self._lease = self._marks = None

    def _work(self) -> Any:
        if self._conn is None or not self._conn.connected:
            raise UnavailableError("MariaDB connection is closed")
        return self._conn

    async def _execute(
        self, conn: Any, sql: str, params: Any, *, retry: bool = True
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Run one statement; driver errors leave as ours (H12: one the table does not know is
        transient, counted by the relay, never fatal).

        ``retry``: an autocommit statement chosen as a deadlock victim (1213; InnoDB rolled it back
        whole) runs again, up to twice. Marks, failures and fetches are each one statement with the
        same effect when repeated, and with marks on a connection of their own they can meet a
        concurrent update of the same index range. Statements of a transaction never retry alone."""
        for attempt in range(3):
            try:
                async with conn.cursor() as cur:
                    count = await cur.execute(sql, params)
                    rows = list(await cur.fetchall()) if cur.description else []
                    return rows, int(count)
            except BaseException as exc:
                if retry and attempt < 2 and error_code(exc) == _DEADLOCK:
                    continue
                ours = (
                    translate(exc, f"{quoted(self.ref)} at {redact_url(self.url)}")
                    if isinstance(exc, Exception)
                    else None
                )
                if not isinstance(exc, Exception) or isinstance(ours, UnavailableError):
                    # Cut off (cancelled, connection lost): the protocol is mid-reply and a
                    # transaction may be open. Close; the server rolls back; the next call on this
                    # connection reconnects (marks, leases) or the relay rebuilds the store.
                    with contextlib.suppress(Exception):
                        conn.close()
                if not isinstance(exc, Exception):
                    raise
                if ours is None:
                    ours = TransientError(f"MariaDB error ({type(exc).__name__}): {first_line(exc)}")
                raise ours from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        async with self._work_lock:
            return (await self._execute(self._work(), sql, params))[0]

    async def _count(self, sql: str, params: Any) -> int:
        async with self._work_lock:
            return (await self._execute(self._work(), sql, params))[1]

    async def _mark(self, sql: str, params: Any) -> int:
        async with self._marks_lock:
            if self._marks is None or not self._marks.connected:
                self._marks = await self._connect()
            return (await self._execute(self._marks, sql, params))[1]

    # -- reading -----------------------------------------------------------------------------------
    async def fetch_pending(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> Sequence[OutboxEvent]:
        sql, params = self._query(limit, skip, leases, max_bytes, exclude, seqs=False)
        rows = await self._run(sql, params)
        if rows:
            # Activity, even if the fingerprint looks the same by the next wait (all delivered):
            # the next waits poll fast again.
            self._changed_at = time.monotonic()
        return [self._event(r) for r in rows]

    def _query(
        self, limit: int, skip: Filter, leases: Leases | None, max_bytes: int, exclude: Collection[int], *, seqs: bool
    ) -> tuple[str, dict[str, Any]]:
        every = leases is None or len(leases) >= BUCKETS
        # An empty IN () is a syntax error: lists that may be empty hold a value no row has.
        in_buckets, params = bind_list("b", [-1] if every or not leases else sorted(leases))
        params.update(limit=limit, max_bytes=max_bytes, exclude=json.dumps(sorted(exclude)))
        if not skip.empty:
            in_paused, paused = bind_list("p", sorted(skip.paused_topics) or [""])
            in_keys, keys = bind_list("k", sorted(skip.held_keys) or [""])
            in_seqs, held = bind_list("s", sorted(skip.held_seqs) or [-1])
            sql = (self._seqs_held_sql if seqs else self._fetch_held_sql).format(
                paused=in_paused, held_keys=in_keys, held_seqs=in_seqs, buckets=in_buckets
            )
            params.update(paused, **keys, **held, every=every)
            return sql, params
        if every:
            return (self._seqs_sql if seqs else self._fetch_sql), params
        return (self._seqs_buckets_sql if seqs else self._fetch_buckets_sql).format(buckets=in_buckets), params

    async def pending_seqs(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> list[int]:
        sql, params = self._query(limit, skip, leases, max_bytes, exclude, seqs=True)
        return [int(r[0]) for r in await self._run(sql, params)]

    async def fetch_rows(self, seqs: Sequence[int]) -> Sequence[OutboxEvent]:
        if not seqs:
            return []
        in_seqs, params = bind_list("s", list(seqs))
        return [self._event(r) for r in await self._run(self._rows_sql.format(seqs=in_seqs), params)]

    @staticmethod
    def _event(r: Sequence[Any]) -> OutboxEvent:
        # A row another program wrote that breaks the contract comes back with ``defect`` (H11).
        return event_from_row(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], _utc(r[9]), r[10], int(r[11]))

    async def fetch_committed(self, ids: Sequence[str]) -> Sequence[OutboxEvent]:
        if not ids:
            return []
        in_ids, params = bind_list("i", list(ids))
        rows = await self._run(self._committed_sql.format(ids=in_ids), params)
        return [self._event(r) for r in rows]

    # -- marking -----------------------------------------------------------------------------------
    def _fence(self, leases: Leases) -> tuple[str, dict[str, Any]]:
        text, params = bind_pairs("f", sorted(leases.items()))
        return text, {"owner": self.owner, **params}

    async def mark_delivered(self, seqs: Sequence[int], leases: Leases | None = None) -> int:
        if not seqs:
            return 0
        in_seqs, params = bind_list("s", list(seqs))
        if leases is None:
            return await self._mark(self._mark_sql.format(seqs=in_seqs), params)
        if not leases:
            return 0
        fence, fenced = self._fence(leases)
        return await self._mark(self._mark_fenced_sql.format(seqs=in_seqs, fence=fence), {**params, **fenced})

    async def record_failure(self, seq: int, error: str, *, dead: bool, leases: Leases | None = None) -> bool:
        params: dict[str, Any] = {"error": storable(error), "dead": dead, "seq": seq}
        if leases is None:
            return await self._count(self._fail_sql, params) == 1
        if not leases:
            return False
        fence, fenced = self._fence(leases)
        return await self._count(self._fail_fenced_sql.format(fence=fence), {**params, **fenced}) == 1

    # -- leases ------------------------------------------------------------------------------------
    async def maintain_leases(self, owner: str, held: Leases, ttl: float, *, rebalance: bool) -> LeaseGrant:
        self.owner = owner
        async with self._lease_lock:
            if self._lease is None or not self._lease.connected:
                self._lease = await self._connect()
            conn = self._lease

            async def run(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
                return (await self._execute(conn, sql, params, retry=False))[0]

            try:
                await run("BEGIN")
                grant = await leases.maintain(run, self._leases_table, self._relays_table, owner, held, ttl, rebalance)
                await run("COMMIT")
            except BaseException:
                # Whatever failed (a deadlock, a timeout that cancelled us mid-statement), the
                # transaction must not survive into the next round: close, the server rolls back.
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            return grant

    async def release_leases(self, owner: str, buckets: Collection[int] | None = None) -> None:
        async with self._lease_lock:
            if self._lease is None or not self._lease.connected:
                self._lease = await self._connect()
            conn = self._lease

            async def run(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
                return (await self._execute(conn, sql, params))[0]

            await leases.release(run, self._leases_table, self._relays_table, owner, buckets)

    # -- waiting -----------------------------------------------------------------------------------
    async def _probe(self) -> tuple[int, int]:
        (count, total), *_ = await self._run(self._fingerprint_sql, None)
        return int(count), int(total)

    async def wait_for_new(self, timeout: float) -> None:
        # Compared with the fingerprint taken when the previous wait ended: a commit after that
        # moment is either seen by the fetch that followed or changes the fingerprint now.
        deadline = time.monotonic() + timeout
        start = self._fingerprint if self._fingerprint is not None else await self._probe()
        quiet = time.monotonic() - self._changed_at >= QUIET_S
        interval = WAKE_MAX_S if quiet else WAKE_MIN_S
        while True:
            current = await self._probe()
            now = time.monotonic()
            if current != start:
                self._fingerprint, self._changed_at = current, now
                return
            if now >= deadline:
                self._fingerprint = current
                return
            await asyncio.sleep(min(interval, max(0.0, deadline - now)))
            slowest = WAKE_IDLE_S if now - self._changed_at >= QUIET_S else WAKE_MAX_S
            interval = min(slowest, interval * 1.5)

    async def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest pending row was written, on the database's clock (no skew)."""
        rows = await self._run(
            "SELECT TIMESTAMPDIFF(MICROSECOND, o.created_at, UTC_TIMESTAMP(6)) / 1e6"
            f" FROM {quoted(self.ref)} o WHERE {_PENDING} ORDER BY o.seq LIMIT 1",
            None,
        )
        return max(0.0, float(rows[0][0])) if rows else None

    async def pending_count(self) -> int:
        rows = await self._run(f"SELECT COUNT(*) FROM {quoted(self.ref)} o WHERE {_PENDING}", None)
        return int(rows[0][0])
