"""SQLite: schema, and the relay's store (sqlite3 on one dedicated worker thread).

SQLite has no notifications; ``PRAGMA data_version`` changes whenever another connection commits,
and reading it costs microseconds, so the relay polls it every few milliseconds instead of
re-running its scan.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.rows import event_from_row
from outboxkit.core.storable import storable
from outboxkit.errors import ConfigurationError, OutboxkitError, SchemaError, TransientError, UnavailableError
from outboxkit.stores.base import (
    BUCKETS,
    DEFAULT_FETCH_MAX_BYTES,
    SCHEMA_VERSION,
    Filter,
    LeaseGrant,
    Leases,
    TableRef,
)
from outboxkit.stores.sqlite.watch import POLL_FAST, POLL_SLOW, SETTLE, FileWatcher

T = TypeVar("T")

# A UUIDv4 in SQL, so a plain-SQL INSERT without an id still gets a well-formed one.
_UUID4_SQL = (
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || "
    "substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
)
_NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def sqlite_path(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` -> a filesystem path."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc not in ("", "localhost"):
        raise ConfigurationError(f"not a SQLite URL: {url!r} (use sqlite:///path/to/file.db)")
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        raise ConfigurationError("SQLite outbox needs a file (the relay runs in another process)")
    return path


def connect(path: str, *, timeout: float = 10.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    # WAL lets the relay read while writers write; NORMAL sync is durable across process crashes
    # (only an OS crash can lose the last commits, as the docs say).
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class SqliteSchema:
    """DDL and INSERT text for SQLite 3.35+."""

    def ddl(self, ref: TableRef, *, notify: bool = True) -> list[str]:
        if ref.schema:
            raise ConfigurationError("SQLite has no schemas; leave schema unset")
        t = ref.qualified
        return [
            f"""CREATE TABLE IF NOT EXISTS {t} (
    -- AUTOINCREMENT: a seq is never reused after deletes, so relay order stays commit order.
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL DEFAULT ({_UUID4_SQL}),
    topic        TEXT NOT NULL,
    key          TEXT,
    type         TEXT,
    source       TEXT,
    payload      BLOB NOT NULL,
    content_type TEXT NOT NULL DEFAULT 'application/json',
    headers      TEXT NOT NULL DEFAULT '{{}}',
    created_at   TEXT NOT NULL DEFAULT ({_NOW_SQL}),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at TEXT,
    dead_at      TEXT
)""",
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('pending')} ON {t} (seq) "
            "WHERE delivered_at IS NULL AND dead_at IS NULL",
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('dead_keys')} ON {t} (key) WHERE dead_at IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("meta")} (
    singleton      INTEGER PRIMARY KEY CHECK (singleton = 1),
    schema_version INTEGER NOT NULL
)""",
            f"INSERT INTO {ref.derived('meta')} (singleton, schema_version) VALUES (1, {SCHEMA_VERSION}) "
            "ON CONFLICT (singleton) DO UPDATE SET schema_version = excluded.schema_version",
        ]

    def insert_sql(self, ref: TableRef, paramstyle: str) -> str:
        cols = "id, topic, key, type, source, payload, content_type, headers"
        if paramstyle == "named":
            values = ":id, :topic, :key, :type, :source, :payload, :content_type, :headers"
        else:
            values = ", ".join("?" * 8)
        return f"INSERT INTO {ref.qualified} ({cols}) VALUES ({values})"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


# -- error translation (H12) -------------------------------------------------------------------------
# sqlite3 raises few classes with many meanings; the message says which. Unavailable: the file
# cannot serve the relay now (I/O error, disk full, read-only mount, not a database): reopen after a
# backoff. "locked"/"busy" (a writer holds the lock past our timeout) and anything else: transient.
_UNAVAILABLE_MESSAGES = (
    "disk i/o error",
    "unable to open database",
    "database or disk is full",
    "readonly database",
    "file is not a database",
    "database disk image is malformed",
)


def translate(path: str, exc: sqlite3.Error) -> OutboxkitError:
    """The outboxkit class of a sqlite3 error (the table is tested row by row)."""
    text = str(exc)
    lowered = text.lower()
    if "no such table" in lowered or "no such column" in lowered:
        return SchemaError(f"outbox tables in {path} are missing or altered ({text}): run `outboxkit migrate`")
    if any(m in lowered for m in _UNAVAILABLE_MESSAGES) or isinstance(exc, sqlite3.InterfaceError):
        return UnavailableError(f"SQLite {path} is unavailable: {text}")
    return TransientError(f"SQLite {path}: {type(exc).__name__}: {text}")


def _columns() -> str:
    # What the relay reads of a row, in the order core.rows.event_from_row takes it.
    return (
        "o.seq, o.id, o.topic, o.key, o.type, o.source, o.payload, o.content_type, o.headers, o.created_at, o.attempts"
    )


class SqliteOutboxStore:
    """Relay store for a SQLite file. All sqlite3 calls run on one worker thread, in order."""

    def __init__(self, url: str, ref: TableRef | None = None, *, hold_dead_keys: bool = True) -> None:
        self.path = sqlite_path(url)
        self.ref = ref or TableRef()
        self.hold_dead_keys = hold_dead_keys
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._version: int | None = None
        self._watcher: FileWatcher | None = None
        self._watch_failed = False
        t = self.ref.qualified
        hold = (
            f" AND (o.key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} d WHERE d.dead_at IS NOT NULL AND d.key = o.key))"
            if hold_dead_keys
            else ""
        )
        columns = _columns()
        pending = "o.delivered_at IS NULL AND o.dead_at IS NULL"
        # Bytes of a payload whatever a program stored in the column (text is counted as UTF-8).
        size = "length(CAST(o.payload AS BLOB))"

        # No cursor (H1): see PostgresOutboxStore. On SQLite writers are serialised anyway, but a
        # plain-SQL writer may hold a transaction open across our scans. The running sum bounds a
        # batch by bytes as well as rows; the first row always passes.
        def bounded(where: str, prefix: str = "", seqs_only: bool = False) -> str:
            # seqs_only: the same rows, reading nothing but their seq: sqlite3 fails a whole fetch
            # on one text value that is not UTF-8, and narrowing it down (H13, core.isolate) must
            # not decode what it is looking for.
            cols = "seq" if seqs_only else "*"
            return (
                f"{prefix}SELECT {cols} FROM (SELECT {columns}, sum({size}) OVER (ORDER BY o.seq) AS running,"
                f" {size} AS size FROM {t} o WHERE {pending}{hold}{where}"
                " AND o.seq NOT IN (SELECT value FROM json_each(:exclude)) ORDER BY o.seq LIMIT :limit)"
                " WHERE running - size < :max_bytes ORDER BY seq"
            )

        self._fetch_sql = bounded("")
        # Held (paused topics, events waiting for a retry): every key with a row on a paused topic
        # or in backoff waits too (G5); see PostgresOutboxStore.
        held_where = (
            " AND o.topic NOT IN (SELECT value FROM json_each(:paused))"
            " AND o.seq NOT IN (SELECT value FROM json_each(:held_seqs))"
            " AND (o.key IS NULL OR (o.key NOT IN (SELECT key FROM paused_keys)"
            " AND o.key NOT IN (SELECT value FROM json_each(:held_keys))))"
        )
        paused_keys = (
            f"WITH paused_keys AS (SELECT DISTINCT h.key FROM {t} h WHERE h.delivered_at IS NULL"
            " AND h.dead_at IS NULL AND h.topic IN (SELECT value FROM json_each(:paused)) AND h.key IS NOT NULL) "
        )
        self._fetch_held_sql = bounded(held_where, prefix=paused_keys)
        # The seqs of what each fetch above would read, and the rows of some seqs (H13).
        self._seqs_sql = bounded("", seqs_only=True)
        self._seqs_held_sql = bounded(held_where, prefix=paused_keys, seqs_only=True)
        self._rows_sql = (
            f"SELECT {columns} FROM {t} o WHERE o.seq IN (SELECT value FROM json_each(?)) AND {pending} ORDER BY o.seq"
        )
        # Inline publishing (the writer, right after its commit): only rows no earlier pending
        # row of the same key precedes, nor (with the hold policy) a dead letter of the key (G5).
        self._committed_sql = (
            f"SELECT {columns} FROM {t} o WHERE {pending}{hold} AND o.id IN (SELECT value FROM json_each(?))"
            f" AND (o.key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} p WHERE p.key = o.key AND p.seq < o.seq"
            " AND p.delivered_at IS NULL AND p.dead_at IS NULL)) ORDER BY o.seq"
        )
        self._mark_sql = (
            f"UPDATE {t} SET delivered_at = {_NOW_SQL} "
            "WHERE seq IN (SELECT value FROM json_each(?)) AND delivered_at IS NULL"
        )
        self._fail_sql = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = ?,"
            f" dead_at = CASE WHEN ? THEN {_NOW_SQL} ELSE dead_at END WHERE seq = ?"
        )

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None or self._conn is None:
            raise UnavailableError("SQLite store is closed")
        conn = self._conn

        def run() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise translate(self.path, exc) from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def open(self) -> None:
        if not os.path.exists(self.path):  # noqa: ASYNC240 - one stat at start-up
            raise SchemaError(f"SQLite file {self.path} does not exist: run `outboxkit migrate` first")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outboxkit-sqlite")
        self._conn = await asyncio.get_running_loop().run_in_executor(self._pool, connect, self.path)
        row = await self._call(lambda c: c.execute(f"SELECT schema_version FROM {self.ref.derived('meta')}").fetchone())
        if row is None or row[0] < SCHEMA_VERSION:
            raise SchemaError("outbox schema is older than this outboxkit: run `outboxkit migrate`")
        self._version = await self._call(lambda c: int(c.execute("PRAGMA data_version").fetchone()[0]))

    async def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self._pool is not None and self._conn is not None:
            conn = self._conn
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._pool = None
        self._conn = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    async def maintain_leases(self, owner: str, held: Leases, ttl: float, *, rebalance: bool) -> LeaseGrant:
        # One relay per SQLite file (it lives on one machine): the process lock stands for every
        # bucket, and the kernel drops it when the holder dies, however it dies.
        return LeaseGrant(dict.fromkeys(range(BUCKETS), 0) if await self._lock() else {})

    async def release_leases(self, owner: str, buckets: Collection[int] | None = None) -> None:
        # The lock stands for every bucket: it is given back only as a whole.
        if buckets is None and self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(f"{self.path}.relay-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def fetch_pending(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> Sequence[OutboxEvent]:
        sql, params = self._query(limit, skip, max_bytes, exclude, seqs=False)
        rows = await self._call(lambda c: c.execute(sql, params).fetchall())
        return [self._event(r) for r in rows]

    def _query(
        self, limit: int, skip: Filter, max_bytes: int, exclude: Collection[int], *, seqs: bool
    ) -> tuple[str, dict[str, object]]:
        params: dict[str, object] = {"limit": limit, "max_bytes": max_bytes, "exclude": json.dumps(list(exclude))}
        if skip.empty:
            return (self._seqs_sql if seqs else self._fetch_sql), params
        params.update(
            paused=json.dumps(sorted(skip.paused_topics)),
            held_keys=json.dumps(sorted(skip.held_keys)),
            held_seqs=json.dumps(sorted(skip.held_seqs)),
        )
        return (self._seqs_held_sql if seqs else self._fetch_held_sql), params

    async def pending_seqs(
        self,
        limit: int,
        skip: Filter,
        leases: Leases | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        exclude: Collection[int] = (),
    ) -> list[int]:
        sql, params = self._query(limit, skip, max_bytes, exclude, seqs=True)
        rows = await self._call(lambda c: c.execute(sql, params).fetchall())
        return [int(r[0]) for r in rows]

    async def fetch_rows(self, seqs: Sequence[int]) -> Sequence[OutboxEvent]:
        payload = json.dumps(list(seqs))
        rows = await self._call(lambda c: c.execute(self._rows_sql, (payload,)).fetchall())
        return [self._event(r) for r in rows]

    @staticmethod
    def _event(r: Sequence[Any]) -> OutboxEvent:
        return event_from_row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10])

    async def fetch_committed(self, ids: Sequence[str]) -> Sequence[OutboxEvent]:
        if not ids:
            return []
        payload = json.dumps(list(ids))
        rows = await self._call(lambda c: c.execute(self._committed_sql, (payload,)).fetchall())
        return [self._event(r) for r in rows]

    async def mark_delivered(self, seqs: Sequence[int], leases: Leases | None = None) -> int:
        # No fencing needed: the relay lock is held by this process for as long as it runs.
        if not seqs:
            return 0
        payload = json.dumps(list(seqs))
        return await self._call(lambda c: int(c.execute(self._mark_sql, (payload,)).rowcount))

    async def record_failure(self, seq: int, error: str, *, dead: bool, leases: Leases | None = None) -> bool:
        params = (storable(error), int(dead), seq)
        return await self._call(lambda c: int(c.execute(self._fail_sql, params).rowcount) == 1)

    async def wait_for_new(self, timeout: float) -> None:
        """Return when another connection committed (``PRAGMA data_version`` moved), or after
        ``timeout``. Idle, it sleeps on inotify (``watch.FileWatcher``) instead of polling."""
        deadline = time.monotonic() + timeout

        def version(c: sqlite3.Connection) -> int:
            return int(c.execute("PRAGMA data_version").fetchone()[0])

        async def moved() -> bool:
            current = await self._call(version)
            if current != start:
                self._version = current
                return True
            return False

        start = self._version if self._version is not None else await self._call(version)
        if await moved():
            return
        if self._watcher is None and not self._watch_failed:
            self._watcher = FileWatcher(self.path)
            if not self._watcher.start():
                self._watcher = None
                self._watch_failed = True
        step = POLL_FAST
        while (left := deadline - time.monotonic()) > 0:
            if self._watcher is not None:
                if await self._watcher.wait(left):
                    for delay in SETTLE:  # the commit may become visible a moment after the write
                        await asyncio.sleep(delay)
                        if await moved():
                            return
                continue
            await asyncio.sleep(min(step, left))
            if await moved():
                return
            step = min(POLL_SLOW, step * 1.5)  # quick right after activity, slower when idle
        self._version = await self._call(version)

    async def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest pending row was written."""
        sql = (
            f"SELECT (julianday('now') - julianday(created_at)) * 86400 FROM {self.ref.qualified}"
            " WHERE delivered_at IS NULL AND dead_at IS NULL ORDER BY seq LIMIT 1"
        )
        row = await self._call(lambda c: c.execute(sql).fetchone())
        return None if row is None else max(0.0, float(row[0]))

    async def pending_count(self) -> int:
        sql = f"SELECT count(*) FROM {self.ref.qualified} WHERE delivered_at IS NULL AND dead_at IS NULL"
        row = await self._call(lambda c: c.execute(sql).fetchone())
        return int(row[0])
