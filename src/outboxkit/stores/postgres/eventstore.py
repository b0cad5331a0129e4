"""PostgreSQL's event store: the outbox table plus stream columns, a stream head table and the
projection checkpoints (see ``outboxkit.eventstore``).

H1 for readers of the store: ``seq`` is taken at insert, so transactions commit out of ``seq``
order. Every row also records its transaction id (``tx``, from ``pg_current_xact_id()``), and a
reader of the global order pages on ``(tx, seq)`` and only reads rows with ``tx`` below the oldest
transaction still running (``pg_snapshot_xmin``): every transaction below that bound has ended, and
every later row gets a ``tx`` at or above it, so a position once passed never gains a row.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.connection import connect_sync
from outboxkit.stores.postgres.schema import PostgresSchema
from outboxkit.stores.postgres.wake import POLL_MAX_S, sleep_sql, wake_sql


class PostgresEventStoreSql:
    name = "postgresql"
    placeholder = "%s"
    now_sql = "now()"
    headers_param = "%s::jsonb"
    #: Rows with tx below this have committed or rolled back: the readers' bound (H1).
    visible_bound = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    #: One batch of a projection at a time. An advisory lock, not a row lock: it takes no
    #: transaction id, so the runner's own transaction never holds the readers' bound back.
    projection_lock = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"

    def waiter(self, url: str, ref: TableRef) -> PostgresWaiter:
        return PostgresWaiter(url, ref.channel, ref)

    def upgrade(self, url: str, ref: TableRef) -> list[str]:
        """ddl() adds the stream columns to a plain outbox itself (ADD COLUMN IF NOT EXISTS); this
        only refuses, in one line, an existing table of that name that is not an outbox at all
        (ddl() would fail half-way with a driver error about a missing column)."""
        conn = connect_sync(url, label="outboxkit-migrate")
        try:
            rows = conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (ref.qualified,),
            ).fetchall()
        finally:
            conn.close()
        have = {str(row[0]) for row in rows}
        missing = sorted(_OUTBOX_COLUMNS - have)
        if have and missing:
            raise ConfigurationError(
                f"{ref.qualified} exists and is not an outbox table (no column {', '.join(missing)}):"
                " choose another --table for the event store"
            )
        return []

    def ddl(self, ref: TableRef, *, notify: bool = True) -> list[str]:
        t = ref.qualified
        return [
            # The events are outbox rows: the relay publishes them with no second write.
            *PostgresSchema().ddl(ref, notify=notify),
            f"""ALTER TABLE {t}
    ADD COLUMN IF NOT EXISTS stream_id text,
    ADD COLUMN IF NOT EXISTS version   bigint,
    -- The writing transaction: the global order is (tx, seq), read below the oldest open tx (H1).
    ADD COLUMN IF NOT EXISTS tx        bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)""",
            # A stream's versions are unique: the last line of defence behind the head row, and
            # the index that reads a stream forward or backward.
            f"CREATE UNIQUE INDEX IF NOT EXISTS {ref.index_name('stream')} ON {t} (stream_id, version)",
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('position')} ON {t} (tx, seq) WHERE stream_id IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("streams")} (
    -- One row per stream: its head. Appends take this row's lock, so writers of one stream queue
    -- here and each sees the version the previous one committed (optimistic concurrency).
    stream_id  text PRIMARY KEY,
    version    bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)""",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("projections")} (
    -- A projection's checkpoint, written in the projection's own transaction (exactly once).
    name       text PRIMARY KEY,
    tx         bigint NOT NULL DEFAULT 0,
    seq        bigint NOT NULL DEFAULT 0,
    events     bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
)""",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("snapshots")} (
    -- The latest snapshot of an aggregate's stream: its state at a version (see Repository).
    stream_id  text PRIMARY KEY,
    version    bigint NOT NULL,
    kind       text NOT NULL,
    state      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)""",
        ]


#: Columns an existing table must have to become an event store (the relay's and the readers').
_OUTBOX_COLUMNS = frozenset({"seq", "id", "topic", "key", "payload", "headers", "delivered_at", "dead_at"})


class PostgresWaiter:
    """Wakes a projection runner when events commit: LISTEN on the table's NOTIFY channel; the
    timeout is the polling fallback. Writers notify only while someone sleeps (wake.py), so the
    runner takes a slot before it sleeps, returns True once to read again (the events of writers
    that saw no sleeper), and gives the slot back when a notification wakes it."""

    def __init__(self, url: str, channel: str, ref: TableRef | None = None) -> None:
        self.url = url
        self.channel = channel
        self.ref = ref
        self.conn: Any = None
        self.slot: int | None = None

    def wait(self, timeout: float) -> bool:
        try:
            if self.conn is None:
                self.conn = connect_sync(self.url, label="outboxkit-projection-listen")
                self.conn.execute(f'LISTEN "{self.channel}"')
            if self.ref is not None and self.slot is None:
                row = self.conn.execute(sleep_sql(self.ref)).fetchone()
                if row is not None and int(row[0]) >= 0:
                    self.slot = int(row[0])
                    return True  # read once more before sleeping
                # No slot (a writer's transaction is open, or every slot has a sleeper): poll.
                any(True for _ in self.conn.notifies(timeout=min(timeout, POLL_MAX_S), stop_after=1))
                return True
            woken = any(True for _ in self.conn.notifies(timeout=timeout, stop_after=1))
            if woken and self.slot is not None and self.ref is not None:
                self.conn.execute(wake_sql(self.ref, self.slot))
                self.slot = None
            return woken
        except Exception:  # the wake-up is an optimisation: fall back to polling
            self.close()
            time.sleep(timeout)
            return False

    def close(self) -> None:
        self.slot = None  # closing the connection releases it
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


EVENT_STORE = PostgresEventStoreSql()
