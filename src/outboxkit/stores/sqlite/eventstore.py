"""SQLite's event store: the outbox table plus stream columns, a stream head table and the
projection checkpoints (see ``outboxkit.eventstore``).

H1 does not arise: SQLite serialises writers, and ``seq`` (AUTOINCREMENT) is taken under the
write lock, so commit order is ``seq`` order. ``tx`` is always 0 and the global order is ``seq``.
"""

from __future__ import annotations

import time

from outboxkit.stores.base import TableRef
from outboxkit.stores.sqlite.store import _NOW_SQL, SqliteSchema


class SqliteEventStoreSql:
    name = "sqlite"
    placeholder = "?"
    now_sql = _NOW_SQL
    headers_param = "?"
    visible_bound = "9223372036854775807"  # one writer at a time: every committed row is readable
    projection_lock = ""  # BEGIN IMMEDIATE already runs one batch at a time

    def waiter(self, url: str, ref: TableRef) -> SqliteWaiter:
        return SqliteWaiter()

    def ddl(self, ref: TableRef, *, notify: bool = True) -> list[str]:
        t = ref.qualified
        outbox = SqliteSchema().ddl(ref, notify=notify)
        # SQLite has no ADD COLUMN IF NOT EXISTS: the event store's table is the outbox's CREATE
        # TABLE with the stream columns spliced in, so the migration stays idempotent and the outbox
        # columns stay the outbox's own (a later outbox column arrives here too).
        create = outbox[0].rstrip()
        if not (create.startswith("CREATE TABLE IF NOT EXISTS") and create.endswith(")")):
            raise AssertionError("unexpected outbox DDL")  # pragma: no cover - a change in store.py
        create = (
            create[:-1].rstrip()
            + """,
    stream_id    TEXT,
    version      INTEGER,
    tx           INTEGER NOT NULL DEFAULT 0
)"""
        )
        return [
            # The events are outbox rows: the relay publishes them with no second write.
            create,
            *outbox[1:],
            f"CREATE UNIQUE INDEX IF NOT EXISTS {ref.index_name('stream')} ON {t} (stream_id, version)",
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('position')} ON {t} (tx, seq) WHERE stream_id IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("streams")} (
    stream_id  TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT ({_NOW_SQL}),
    updated_at TEXT NOT NULL DEFAULT ({_NOW_SQL})
)""",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("projections")} (
    name       TEXT PRIMARY KEY,
    tx         INTEGER NOT NULL DEFAULT 0,
    seq        INTEGER NOT NULL DEFAULT 0,
    events     INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL DEFAULT ({_NOW_SQL})
)""",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("snapshots")} (
    -- The latest snapshot of an aggregate's stream: its state at a version (see Repository).
    stream_id  TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    state      BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT ({_NOW_SQL})
)""",
        ]


class SqliteWaiter:
    """Polling: a projection runner on SQLite looks again after the timeout."""

    def wait(self, timeout: float) -> bool:
        time.sleep(timeout)
        return False

    def close(self) -> None:
        pass


EVENT_STORE = SqliteEventStoreSql()
