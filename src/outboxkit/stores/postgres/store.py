"""PostgreSQL: schema, and the relay's store on psycopg 3 (async).

Wake-ups (H2, see ``wake.py``): a busy relay polls; a quiet one sleeps holding a slot lock, and
only then does the outbox's statement trigger NOTIFY its channel, so writers pay for NOTIFY's
commit lock only while a relay sleeps. Rows inserted by plain SQL from any language wake the relay
too, and polling remains the fallback (costs measured in benchmarks/write_overhead.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.leases import adopt
from outboxkit.core.rows import event_from_row
from outboxkit.core.storable import storable
from outboxkit.core.urls import redact_url
from outboxkit.errors import OutboxkitError, SchemaError, TransientError, UnavailableError
from outboxkit.stores.base import (
    BUCKETS,
    DEFAULT_FETCH_MAX_BYTES,
    SCHEMA_VERSION,
    Filter,
    LeaseGrant,
    Leases,
    TableRef,
)

# The DDL lives in schema.py, which needs no driver (`outboxkit migrate --sql` without psycopg).
from outboxkit.stores.postgres.schema import PostgresSchema  # noqa: F401
from outboxkit.stores.postgres.wake import WakePolicy, sleep_sql, wake_sql

log = logging.getLogger("outboxkit.relay")


def bucket_sql(alias: str) -> str:
    """A row's bucket: its key's hash (keyless rows spread by id), the same function for every
    relay and every PostgreSQL version (hashtextextended is what hash partitioning uses)."""
    return f"abs(mod(hashtextextended(coalesce({alias}.key, {alias}.id::text), 0), {BUCKETS}))"


# -- error translation (H12) -------------------------------------------------------------------------
# SQLSTATE -> what it means for the relay. Unavailable: this node cannot serve the relay now
# (connection gone, shutting down, out of resources, read-only after a fail-over): reconnect after a
# backoff, until a node that can is back. Schema: the tables are not there. Everything else,
# including codes nobody listed, is transient: the relay reconnects and tries again.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})  # connection, resources, operator, system
_UNAVAILABLE_CODES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a standby, or a demoted primary (default_transaction_read_only)
        "25P03",  # idle_in_transaction_session_timeout: the server closed our session
        "42501",  # insufficient_privilege: grants changed; an operator must act, retrying is all we can do
    }
)
_TRANSIENT_CODES = frozenset({"57014", "55P03"})  # statement timeout / lock not available: retry
_SCHEMA_CODES = frozenset({"42P01", "42703", "3F000"})  # undefined table / column / schema


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unavailable(url: str, exc: BaseException) -> UnavailableError:
    return UnavailableError(f"PostgreSQL at {redact_url(url)} is unavailable: {_first_line(exc)}")


def translate(url: str, exc: psycopg.Error) -> OutboxkitError:
    """The outboxkit class of a psycopg error (the table is tested row by row)."""
    state = exc.sqlstate or ""
    if state in _TRANSIENT_CODES:
        return TransientError(f"PostgreSQL error {state}: {_first_line(exc)}")
    if state in _SCHEMA_CODES:
        return SchemaError(f"outbox tables are missing or altered ({_first_line(exc)}): run `outboxkit migrate`")
    if state == "25006":
        return UnavailableError(
            f"PostgreSQL at {redact_url(url)} is read-only (a standby or a demoted primary); "
            "waiting for a writable primary"
        )
    if (
        not state
        or state[:2] in _UNAVAILABLE_CLASSES
        or state in _UNAVAILABLE_CODES
        or isinstance(exc, psycopg.InterfaceError)
    ):
        return _unavailable(url, exc)
    return TransientError(f"PostgreSQL error {state}: {_first_line(exc)}")


# -- the relay's SQL -----------------------------------------------------------------------------
# What the relay reads of a row, in the order core.rows.event_from_row takes it. headers as text:
# the row check parses it (a jsonb array or string would otherwise arrive as a Python list/str).
_COLUMNS = (
    "o.seq",
    "o.id::text",
    "o.topic",
    "o.key",
    "o.type",
    "o.source",
    "o.payload",
    "o.content_type",
    "o.headers::text",
    "o.created_at",
    "o.attempts",
)
_PENDING = "o.delivered_at IS NULL AND o.dead_at IS NULL"


async def connect_relay(
    url: str, application_name: str = "outboxkit-relay", connect_timeout: float = 5.0
) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection as the relay uses them; ``UnavailableError`` if it cannot be made."""
    try:
        return await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            connect_timeout=max(1, int(connect_timeout)),
            application_name=application_name,
            row_factory=tuple_row,
            # A peer that vanished without a FIN (partition, powered-off host) is noticed in
            # about 10 s instead of the kernel's two hours.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
    except psycopg.Error as exc:
        raise _unavailable(url, exc) from None


class PostgresOutboxStore:
    """Relay store on psycopg 3. Three connections: work (fetch, mark), leases (the keeper runs
    beside the batches), and one that only LISTENs, so a long wait never blocks a fetch."""

    def __init__(
        self,
        url: str,
        ref: TableRef | None = None,
        *,
        hold_dead_keys: bool = True,
        application_name: str = "outboxkit-relay",
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.ref = ref or TableRef()
        self.hold_dead_keys = hold_dead_keys
        self.application_name = application_name
        self.connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._listen: psycopg.AsyncConnection[Any] | None = None
        self._woken = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        # Sleeping (wake.py): the slot this store holds, on which connection (the lease one: a
        # session lock dies with it), and whether a fetch started since the slot was taken.
        self._policy = WakePolicy()
        self._slot: int | None = None
        self._slot_conn: psycopg.AsyncConnection[Any] | None = None
        self._rechecked = False
        self._sleeping: asyncio.Task[None] | None = None
        self._waking: asyncio.Task[None] | None = None
        t = self.ref.qualified
        hold = (
            f" AND (o.key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} d WHERE d.dead_at IS NOT NULL AND d.key = o.key))"
            if hold_dead_keys
            else ""
        )
        exprs = (*_COLUMNS, bucket_sql("o"))
        columns = ", ".join(exprs)
        named = ", ".join(f"{expr} AS c{i}" for i, expr in enumerate(exprs))
        outer = ", ".join(f"w.c{i}" for i in range(len(exprs)))

        # No cursor (H1): the scan starts at the lowest pending seq every time, so a transaction
        # that took its seq early and committed late is still found. The partial index makes
        # this an index range scan over pending rows only. The running sum bounds a batch by bytes
        # as well as rows (octet_length reads a TOASTed value's size from its pointer, not the
        # value); the first row always passes, so one huge row still moves on.
        def bounded(where: str, seqs_only: bool = False) -> str:
            # seqs_only: the same rows, reading nothing but their seq (narrowing down a fetch that
            # fails on one row's content, H13: see core.isolate).
            inner, cols = ("o.seq AS c0", "w.c0") if seqs_only else (named, outer)
            return (
                f"SELECT {cols} FROM ("
                f"SELECT {inner}, sum(octet_length(o.payload)) OVER (ORDER BY o.seq) AS running,"
                f" octet_length(o.payload) AS size FROM {t} o WHERE {_PENDING}{hold}{where}"
                # Rows in hand: a hashed array test (PostgreSQL 14+), cheap for thousands of seqs.
                " AND NOT (o.seq = ANY(%(exclude)s::bigint[]))"
                " ORDER BY o.seq LIMIT %(limit)s) w WHERE w.running - w.size < %(max_bytes)s ORDER BY w.c0"
            )

        self._sleep_sql = sleep_sql(self.ref)
        self._fetch_sql = bounded("")
        # With some buckets only (several relays): same scan, filtered by bucket. The filter costs a
        # hash per pending row scanned; pending rows are few when relays keep up.
        self._fetch_buckets_sql = bounded(f" AND {bucket_sql('o')} = ANY(%(buckets)s)")
        # The relay is waiting on something (paused topics, events in backoff): their rows are left
        # out AND so is every pending row of a key that has a row on a paused topic or waits for a
        # retry, otherwise that key's later events would overtake the held one (G5). Only used in
        # that abnormal state; O(pending).
        held_where = (
            " AND NOT (o.topic = ANY(%(paused)s)) AND NOT (o.seq = ANY(%(held_seqs)s))"
            " AND (o.key IS NULL OR (o.key NOT IN (SELECT key FROM paused_keys)"
            " AND NOT (o.key = ANY(%(held_keys)s))))"
            f" AND ({bucket_sql('o')} = ANY(%(buckets)s) OR %(every)s)"
        )
        paused_keys = (
            f"WITH paused_keys AS (SELECT DISTINCT h.key FROM {t} h WHERE h.delivered_at IS NULL"
            " AND h.dead_at IS NULL AND h.topic = ANY(%(paused)s) AND h.key IS NOT NULL) "
        )
        self._fetch_held_sql = paused_keys + bounded(held_where)
        # The seqs of what each fetch above would read, and the rows of some seqs: the reads that
        # narrow a failing fetch down to its row (H13).
        self._seqs_sql = bounded("", True)
        self._seqs_buckets_sql = bounded(f" AND {bucket_sql('o')} = ANY(%(buckets)s)", True)
        self._seqs_held_sql = paused_keys + bounded(held_where, True)
        self._rows_sql = f"SELECT {columns} FROM {t} o WHERE o.seq = ANY(%s::bigint[]) AND {_PENDING} ORDER BY o.seq"
        # Inline publishing (the writer, right after its commit): only rows no earlier pending
        # row of the same key precedes, and (with the hold policy) whose key has no dead letter, so
        # the writer never overtakes the relay on a key, nor an event held behind a dead letter (G5).
        self._committed_sql = (
            f"SELECT {columns} FROM {t} o WHERE {_PENDING}{hold} AND o.id = ANY(%s::uuid[])"
            f" AND (o.key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} p WHERE p.key = o.key AND p.seq < o.seq"
            " AND p.delivered_at IS NULL AND p.dead_at IS NULL)) ORDER BY o.seq"
        )
        leases = self.ref.derived("leases")
        # Fencing (H6): the mark applies only while this relay still holds the row's bucket at the
        # epoch it was granted. A relay that paused past its lease (its bucket re-leased with a
        # higher epoch) marks nothing; the new owner re-publishes, and consumers dedupe by id.
        # %(epochs)s is an array indexed by bucket (1-based in SQL), -1 where not held.
        fence = (
            f"EXISTS (SELECT 1 FROM {leases} l WHERE l.bucket = {bucket_sql('o')} AND l.owner = %(owner)s"
            " AND l.epoch = (%(epochs)s::bigint[])[l.bucket + 1] AND l.expires_at > now())"
        )
        self._mark_sql = f"UPDATE {t} SET delivered_at = now() WHERE seq = ANY(%s) AND delivered_at IS NULL"
        self._mark_fenced_sql = (
            f"UPDATE {t} o SET delivered_at = now() WHERE o.seq = ANY(%(seqs)s) AND o.delivered_at IS NULL AND {fence}"
        )
        self._fail_sql = (
            f"UPDATE {t} o SET attempts = attempts + 1, last_error = %(error)s,"
            " dead_at = CASE WHEN %(dead)s THEN now() ELSE dead_at END WHERE o.seq = %(seq)s"
        )
        self._fail_fenced_sql = self._fail_sql + f" AND {fence}"
        self.owner: str | None = None
        # Leases get a connection of their own: the keeper runs beside the batches, and a
        # transaction on a shared connection would swallow the batch's statements.
        self._lease: psycopg.AsyncConnection[Any] | None = None
        self._lease_lock = asyncio.Lock()
        # Marks get a connection of their own too, so they overlap the next fetch, and commit
        # without waiting for their WAL flush (synchronous_commit=off): a mark lost in a database
        # crash only makes the relay publish that row again, with the same id (G6).
        self._marks: psycopg.AsyncConnection[Any] | None = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await connect_relay(self.url, self.application_name, self.connect_timeout)

    async def open(self) -> None:
        self._conn = await self._connect()
        await self._check_schema(self._conn)
        self._listen = await self._connect()
        try:
            await self._listen.execute(f'LISTEN "{self.ref.channel}"')
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None
        self._listener = asyncio.create_task(self._listen_loop(self._listen))

    async def _check_schema(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """``SchemaError`` unless the outbox's tables are there at this outboxkit's version."""
        try:
            cur = await conn.execute(f"SELECT schema_version FROM {self.ref.derived('meta')}")
            row = await cur.fetchone()
        except psycopg.errors.UndefinedTable:
            raise SchemaError(
                f"outbox table {self.ref.qualified} not found: run `outboxkit migrate --db URL` first"
            ) from None
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None
        if row is None or row[0] < SCHEMA_VERSION:
            raise SchemaError("outbox schema is older than this outboxkit: run `outboxkit migrate`")

    async def _listen_loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for _ in conn.notifies():
                self._woken.set()
        except psycopg.Error:
            # The connection died; the next database call fails too and the relay reconnects.
            # Until then polling covers us.
            self._woken.set()

    async def close(self) -> None:
        for task in (self._sleeping, self._waking):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        self._sleeping = self._waking = None
        self._slot = self._slot_conn = None  # closing the lease connection releases the slot
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        for conn in (self._listen, self._conn, self._lease, self._marks):
            if conn is not None:
                # Closing a dead connection may fail; there is nothing left to do with it.
                with contextlib.suppress(Exception):
                    await conn.close()
        self._conn = self._listen = self._lease = self._marks = None

    def _work(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            raise UnavailableError("PostgreSQL connection is closed")
        return self._conn

    async def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        try:
            cur = await self._work().execute(sql, params)
            return await cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    def _query(
        self, limit: int, skip: Filter, leases: Leases | None, max_bytes: int, exclude: Collection[int], seqs: bool
    ) -> tuple[str, dict[str, Any]]:
        every = leases is None or len(leases) >= BUCKETS
        buckets = [] if every or leases is None else sorted(leases)
        params: dict[str, Any] = {"limit": limit, "max_bytes": max_bytes, "exclude": list(exclude)}
        if not skip.empty:
            params.update(
                paused=sorted(skip.paused_topics),
                held_keys=sorted(skip.held_keys),
                held_seqs=sorted(skip.held_seqs),
                buckets=buckets,
                every=every,
            )
            return (self._seqs_held_sql if seqs else self._fetch_held_sql), params
        if every:
            return (self._seqs_sql if seqs else self._fetch_sql), params
        params["buckets"] = buckets
        return (self._seqs_buckets_sql if seqs else self._fetch_buckets_sql), params

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
        if self._slot is not None:
            # Asleep: this fetch's snapshot is taken after the slot was, so it sees the rows of
            # every writer that found no sleeper (they had all ended before the slot was granted).
            self._rechecked = True
        rows = await self._run(sql, params)
        if rows and self._policy.fetched(time.monotonic(), len(rows)):
            # Busy: poll instead of sleeping, and give the slot back so writers stop notifying.
            self._wake_up()
        return [self._event(r) for r in rows]

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
        return [self._event(r) for r in await self._run(self._rows_sql, [list(seqs)])]

    @staticmethod
    def _event(r: Sequence[Any]) -> OutboxEvent:
        return event_from_row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])

    async def fetch_committed(self, ids: Sequence[str]) -> Sequence[OutboxEvent]:
        if not ids:
            return []
        rows = await self._run(self._committed_sql, [list(ids)])
        return [self._event(r) for r in rows]

    def _fence(self, leases: Leases) -> dict[str, Any]:
        epochs = [-1] * BUCKETS
        for bucket, epoch in leases.items():
            epochs[bucket] = epoch
        return {"owner": self.owner, "epochs": epochs}

    async def mark_delivered(self, seqs: Sequence[int], leases: Leases | None = None) -> int:
        if not seqs:
            return 0
        if self._marks is None or self._marks.closed:
            # SET, not the connection's options: the URL may carry options of its own (search_path).
            marks = await self._connect()
            try:
                await marks.execute("SET synchronous_commit = off")
            except psycopg.Error as exc:
                raise translate(self.url, exc) from None
            self._marks = marks
        if leases is None:
            return await self._count(self._mark_sql, [list(seqs)], self._marks)
        return await self._count(self._mark_fenced_sql, {"seqs": list(seqs), **self._fence(leases)}, self._marks)

    async def record_failure(self, seq: int, error: str, *, dead: bool, leases: Leases | None = None) -> bool:
        params: dict[str, Any] = {"error": storable(error), "dead": dead, "seq": seq}
        if leases is None:
            return await self._count(self._fail_sql, params) == 1
        return await self._count(self._fail_fenced_sql, {**params, **self._fence(leases)}) == 1

    async def _count(self, sql: str, params: Any, conn: psycopg.AsyncConnection[Any] | None = None) -> int:
        try:
            cur = await (conn or self._work()).execute(sql, params)
            return int(cur.rowcount)
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    # -- leases ------------------------------------------------------------------------------------
    async def maintain_leases(self, owner: str, held: Leases, ttl: float, *, rebalance: bool) -> LeaseGrant:
        self.owner = owner
        async with self._lease_lock:
            conn = await self._lease_connection()
            return await self._maintain(conn, owner, held, ttl, rebalance=rebalance)

    async def _lease_connection(self) -> psycopg.AsyncConnection[Any]:
        if self._lease is None or self._lease.closed:
            self._lease = await self._connect()
        return self._lease

    async def _maintain(
        self, conn: psycopg.AsyncConnection[Any], owner: str, held: Leases, ttl: float, *, rebalance: bool
    ) -> LeaseGrant:
        relays, leases = self.ref.derived("relays"), self.ref.derived("leases")
        interval = timedelta(seconds=ttl)
        try:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO {relays} (owner, heartbeat_at, started_at) VALUES (%s, now(), now())"
                    " ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()",
                    [owner],
                )
                # Renew what we still hold at the same epoch and not yet expired. A lease that
                # expired is not renewed even if nobody took it: it is re-acquired below with a new
                # epoch, so marks made under the old one stay fenced.
                cur = await conn.execute(
                    f"UPDATE {leases} SET expires_at = now() + %s WHERE owner = %s AND expires_at > now()"
                    " RETURNING bucket, epoch",
                    [interval, owner],
                )
                now_held = {int(b): int(e) for b, e in await cur.fetchall()}
                back = adopt(held, now_held)
                if back:
                    # Ours by name but not held at that epoch (an earlier process of this owner,
                    # restarted by its supervisor): taken back now, at a new epoch, so marks of
                    # whatever that process still had in flight are fenced.
                    cur = await conn.execute(
                        f"UPDATE {leases} SET epoch = epoch + 1 WHERE owner = %s AND bucket = ANY(%s)"
                        " RETURNING bucket, epoch",
                        [owner, sorted(back)],
                    )
                    now_held.update({int(b): int(e) for b, e in await cur.fetchall()})
                if not rebalance:
                    return LeaseGrant(now_held, max(len(now_held), 1))
                cur = await conn.execute(f"SELECT count(*) FROM {relays} WHERE heartbeat_at > now() - %s", [interval])
                row = await cur.fetchone()
                live = max(1, int(row[0]) if row else 1)
                share = -(-BUCKETS // live)  # ceil
                # Buckets beyond the share are not released here: the relay drains them first
                # (nothing of theirs in flight), then calls release_leases, so the next owner never
                # re-sends what this relay already published (G6).
                if len(now_held) < share:
                    # SKIP LOCKED: two relays acquiring at once split the free buckets between them.
                    cur = await conn.execute(
                        f"UPDATE {leases} SET owner = %s, epoch = epoch + 1, expires_at = now() + %s"
                        f" WHERE bucket IN (SELECT bucket FROM {leases}"
                        "   WHERE expires_at IS NULL OR expires_at <= now()"
                        "   ORDER BY bucket LIMIT %s FOR UPDATE SKIP LOCKED)"
                        " RETURNING bucket, epoch",
                        [owner, interval, share - len(now_held)],
                    )
                    now_held.update({int(b): int(e) for b, e in await cur.fetchall()})
                # Forget relays long gone, so "live" stays right.
                await conn.execute(
                    f"DELETE FROM {relays} WHERE heartbeat_at < now() - %s", [timedelta(seconds=max(60.0, 10 * ttl))]
                )
                return LeaseGrant(now_held, share)
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    async def release_leases(self, owner: str, buckets: Collection[int] | None = None) -> None:
        async with self._lease_lock:
            await self._release(await self._lease_connection(), owner, buckets)

    async def _release(self, conn: psycopg.AsyncConnection[Any], owner: str, buckets: Collection[int] | None) -> None:
        leases = self.ref.derived("leases")
        try:
            async with conn.transaction():
                if buckets is None:
                    await conn.execute(f"UPDATE {leases} SET owner = NULL, expires_at = NULL WHERE owner = %s", [owner])
                    await conn.execute(f"DELETE FROM {self.ref.derived('relays')} WHERE owner = %s", [owner])
                elif buckets:
                    await conn.execute(
                        f"UPDATE {leases} SET owner = NULL, expires_at = NULL WHERE owner = %s AND bucket = ANY(%s)",
                        [owner, sorted(buckets)],
                    )
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None

    # -- waking (wake.py) ---------------------------------------------------------------------------
    async def wait_for_new(self, timeout: float) -> None:
        """Busy (a fetch returned rows lately): wait one polling interval, or less if notified.
        Quiet: take a slot, return at once so the relay fetches once more (the rows of writers that
        saw no sleeper), then sleep until notified or ``timeout``."""
        held_on = self._slot_conn
        if self._slot is not None and (held_on is None or held_on is not self._lease or held_on.closed):
            self._slot = None  # the lease connection was replaced: its session lock went with it
        if self._slot is None and self._policy.sleepy(time.monotonic()):
            # Shielded: a cancelled wait (the relay fetches) must not lose track of a slot taken.
            # One attempt at a time: a session lock taken twice would need two unlocks.
            if self._sleeping is None or self._sleeping.done():
                self._sleeping = asyncio.ensure_future(self._sleep())
            await asyncio.shield(self._sleeping)
            if self._slot is not None and not self._rechecked:
                return
        if self._slot is not None and not self._rechecked:
            return
        wait = timeout if self._slot is not None else min(timeout, self._policy.next_poll())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), wait)
        self._woken.clear()

    async def _sleep(self) -> None:
        if self._waking is not None:
            await asyncio.gather(self._waking, return_exceptions=True)  # its unlock comes first
        async with self._lease_lock:
            try:
                conn = await self._lease_connection()
                cur = await conn.execute(self._sleep_sql)
                row = await cur.fetchone()
            except (psycopg.Error, OutboxkitError) as exc:
                # A hint only: stay awake and poll; the lease keeper reports the connection.
                log.debug("could not take a wake-up slot: %s", exc)
                return
            if row is not None and int(row[0]) >= 0:
                self._slot, self._slot_conn, self._rechecked = int(row[0]), conn, False

    def _wake_up(self) -> None:
        """Give the slot back (in the background: nothing waits for it)."""
        slot, conn = self._slot, self._slot_conn
        if slot is None or conn is None:
            return
        self._slot = self._slot_conn = None

        async def unlock() -> None:
            async with self._lease_lock:
                if conn is self._lease and not conn.closed:
                    try:
                        await conn.execute(wake_sql(self.ref, slot))
                    except psycopg.Error as exc:
                        log.debug("could not give the wake-up slot back: %s", exc)

        self._waking = asyncio.ensure_future(unlock())

    async def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest pending row was written, on the database's clock (no skew)."""
        rows = await self._run(
            f"SELECT extract(epoch FROM clock_timestamp() - created_at)::float8 FROM {self.ref.qualified}"
            " WHERE delivered_at IS NULL AND dead_at IS NULL ORDER BY seq LIMIT 1",
            [],
        )
        return max(0.0, float(rows[0][0])) if rows else None

    async def pending_count(self) -> int:
        rows = await self._run(
            f"SELECT count(*) FROM {self.ref.qualified} WHERE delivered_at IS NULL AND dead_at IS NULL", []
        )
        return int(rows[0][0])
