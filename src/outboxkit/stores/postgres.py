"""PostgreSQL: schema, and the relay's store on psycopg 3 (async).

Wake-ups come from a statement-level trigger that NOTIFYs the relay's channel, so rows inserted by
plain SQL from any language wake the relay too; polling remains the fallback (H2 cost measured in
benchmarks/write_overhead.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.urls import redact_url
from outboxkit.errors import SchemaError, UnavailableError
from outboxkit.stores.base import SCHEMA_VERSION, Filter, TableRef


class PostgresSchema:
    """DDL and INSERT text for PostgreSQL 13+."""

    def ddl(self, ref: TableRef, *, notify: bool = True) -> list[str]:
        t = ref.qualified
        stmts = []
        if ref.schema:
            stmts.append(f'CREATE SCHEMA IF NOT EXISTS "{ref.schema}"')
        stmts += [
            f"""CREATE TABLE IF NOT EXISTS {t} (
    -- Relay order. GENERATED ALWAYS: writers cannot choose it.
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    topic        text NOT NULL,
    key          text,
    type         text,
    source       text,
    payload      bytea NOT NULL,
    content_type text NOT NULL DEFAULT 'application/json',
    headers      jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    delivered_at timestamptz,
    dead_at      timestamptz
)""",
            # The relay's only scan. Partial, so delivered rows (kept for replay) cost it nothing.
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('pending')} ON {t} (seq) "
            "WHERE delivered_at IS NULL AND dead_at IS NULL",
            # Keys held behind a dead letter (H5); empty in normal operation, so free to keep.
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('dead_keys')} ON {t} (key) WHERE dead_at IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("meta")} (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL
)""",
            f"INSERT INTO {ref.derived('meta')} (schema_version) VALUES ({SCHEMA_VERSION}) "
            f"ON CONFLICT (singleton) DO UPDATE SET schema_version = EXCLUDED.schema_version",
        ]
        fn = ref.derived("notify")
        trigger = ref.index_name("notify")
        stmts.append(f"DROP TRIGGER IF EXISTS {trigger} ON {t}")
        if notify:
            stmts += [
                # One NOTIFY per inserting statement, and PostgreSQL folds identical notifications
                # of one transaction into one, so a transaction emitting 100 events notifies once.
                f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{ref.channel}', '');
    RETURN NULL;
END
$$""",
                f"CREATE TRIGGER {trigger} AFTER INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
            ]
        return stmts

    def insert_sql(self, ref: TableRef, paramstyle: str) -> str:
        cols = "id, topic, key, type, source, payload, content_type, headers"
        if paramstyle == "named":
            values = ":id, :topic, :key, :type, :source, :payload, :content_type, CAST(:headers AS jsonb)"
        else:
            values = "%s, %s, %s, %s, %s, %s, %s, %s::jsonb"
        return f"INSERT INTO {ref.qualified} ({cols}) VALUES ({values})"


def _unavailable(url: str, exc: BaseException) -> UnavailableError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UnavailableError(f"PostgreSQL at {redact_url(url)} is unavailable: {reason}")


class PostgresOutboxStore:
    """Relay store on psycopg 3. Two connections: one for work (holds the relay's advisory lock),
    one that only LISTENs, so a long wait never blocks a fetch."""

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
        t = self.ref.qualified
        hold = (
            f" AND (o.key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} d WHERE d.dead_at IS NOT NULL AND d.key = o.key))"
            if hold_dead_keys
            else ""
        )
        # No cursor (H1): the scan starts at the lowest pending seq every time, so a transaction
        # that took its seq early and committed late is still found. The partial index makes
        # this an index range scan over pending rows only.
        columns = (
            "o.seq, o.id::text, o.topic, o.key, o.type, o.source, o.payload, o.content_type,"
            " o.headers, o.created_at, o.attempts"
        )
        pending = "o.delivered_at IS NULL AND o.dead_at IS NULL"
        self._fetch_sql = f"SELECT {columns} FROM {t} o WHERE {pending}{hold} ORDER BY o.seq LIMIT %s"
        # While topics are paused (unroutable), their rows are left out AND so is every pending row
        # of a key that has a row on a paused topic: otherwise that key's later events on other
        # topics would overtake the held one (G5). Only used in that abnormal state; O(pending).
        self._fetch_paused_sql = (
            f"WITH held AS (SELECT DISTINCT h.key FROM {t} h WHERE h.delivered_at IS NULL"
            " AND h.dead_at IS NULL AND h.topic = ANY(%s) AND h.key IS NOT NULL)"
            f" SELECT {columns} FROM {t} o WHERE {pending}{hold} AND NOT (o.topic = ANY(%s))"
            " AND (o.key IS NULL OR o.key NOT IN (SELECT key FROM held)) ORDER BY o.seq LIMIT %s"
        )
        self._mark_sql = f"UPDATE {t} SET delivered_at = now() WHERE seq = ANY(%s) AND delivered_at IS NULL"
        self._fail_sql = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = %s,"
            " dead_at = CASE WHEN %s THEN now() ELSE dead_at END WHERE seq = %s"
        )

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name=self.application_name,
                row_factory=tuple_row,
            )
        except psycopg.Error as exc:
            raise _unavailable(self.url, exc) from None

    async def open(self) -> None:
        self._conn = await self._connect()
        try:
            cur = await self._conn.execute(f"SELECT schema_version FROM {self.ref.derived('meta')}")
            row = await cur.fetchone()
        except psycopg.errors.UndefinedTable:
            raise SchemaError(
                f"outbox table {self.ref.qualified} not found: run `outboxkit migrate --db URL` first"
            ) from None
        except psycopg.Error as exc:
            raise _unavailable(self.url, exc) from None
        if row is None or row[0] < SCHEMA_VERSION:
            raise SchemaError("outbox schema is older than this outboxkit: run `outboxkit migrate`")
        self._listen = await self._connect()
        await self._listen.execute(f'LISTEN "{self.ref.channel}"')
        self._listener = asyncio.create_task(self._listen_loop(self._listen))

    async def _listen_loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for _ in conn.notifies():
                self._woken.set()
        except psycopg.Error:
            # The connection died; the next database call fails too and the relay reconnects.
            # Until then polling covers us.
            self._woken.set()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        for conn in (self._listen, self._conn):
            if conn is not None:
                # Closing a dead connection may fail; there is nothing left to do with it.
                with contextlib.suppress(Exception):
                    await conn.close()
        self._conn = self._listen = None

    def _work(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            raise UnavailableError("PostgreSQL connection is closed")
        return self._conn

    async def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            cur = await self._work().execute(sql, params)
            return await cur.fetchall() if cur.description else []
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _unavailable(self.url, exc) from None

    async def acquire_relay_lock(self) -> bool:
        # Session-level advisory lock: released by the server when our connection ends, however
        # it ends, so a SIGKILLed relay never leaves the outbox locked.
        rows = await self._run("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [self.ref.lock_name])
        return bool(rows[0][0])

    async def fetch_pending(self, limit: int, skip: Filter) -> Sequence[OutboxEvent]:
        if skip.paused_topics:
            paused = sorted(skip.paused_topics)
            rows = await self._run(self._fetch_paused_sql, [paused, paused, limit])
        else:
            rows = await self._run(self._fetch_sql, [limit])
        return [
            OutboxEvent(
                seq=r[0],
                id=r[1],
                topic=r[2],
                key=r[3],
                type=r[4],
                source=r[5],
                payload=bytes(r[6]),
                content_type=r[7],
                headers=r[8] if isinstance(r[8], dict) else json.loads(r[8] or "{}"),
                created_at=r[9],
                attempts=r[10],
            )
            for r in rows
        ]

    async def mark_delivered(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self._run(self._mark_sql, [list(seqs)])

    async def record_failure(self, seq: int, error: str, *, dead: bool) -> None:
        await self._run(self._fail_sql, [error[:2000], dead, seq])

    async def wait_for_new(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    async def pending_count(self) -> int:
        rows = await self._run(
            f"SELECT count(*) FROM {self.ref.qualified} WHERE delivered_at IS NULL AND dead_at IS NULL", []
        )
        return int(rows[0][0])
