"""SQLite's event store: the outbox table plus stream columns, a stream head table and the
projection checkpoints (see ``outboxkit.eventstore``).

H1 does not arise: SQLite serialises writers, and ``seq`` (AUTOINCREMENT) is taken under the
write lock, so commit order is ``seq`` order. ``tx`` is always 0 and the global order is ``seq``.
"""

from __future__ import annotations

import time

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.sqlite.store import _NOW_SQL, SqliteSchema, connect, sqlite_path


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

    def upgrade(self, url: str, ref: TableRef) -> list[str]:
        """Add the stream columns to a table first created as a plain outbox (``outboxkit migrate``):
        CREATE TABLE IF NOT EXISTS leaves an existing table as it is, and SQLite has no ADD COLUMN
        IF NOT EXISTS, so the columns are looked up and added under the write lock (two migrations
        at once add them once). Existing rows keep ``stream_id`` NULL: readers of streams skip them,
        the relay still publishes them. Returns the columns added."""
        lite = connect(sqlite_path(url))
        try:
            lite.execute("BEGIN IMMEDIATE")
            have = {str(row[1]).lower() for row in lite.execute(f"PRAGMA table_info({ref.qualified})")}
            if not have:
                lite.execute("ROLLBACK")
                return []  # no table yet: ddl() creates it with every column
            missing = sorted(_OUTBOX_COLUMNS - have)
            if missing:
                lite.execute("ROLLBACK")
                raise ConfigurationError(
                    f"{ref.qualified} exists and is not an outbox table (no column {', '.join(missing)}):"
                    " choose another --table for the event store"
                )
            added = [name for name, _ in _STREAM_COLUMNS if name not in have]
            for name, decl in _STREAM_COLUMNS:
                if name not in have:
                    lite.execute(f"ALTER TABLE {ref.qualified} ADD COLUMN {name} {decl}")
            lite.execute("COMMIT")
            return added
        finally:
            lite.close()


#: The stream columns ddl() splices into the outbox's CREATE TABLE, for ALTER TABLE ADD COLUMN.
_STREAM_COLUMNS = (("stream_id", "TEXT"), ("version", "INTEGER"), ("tx", "INTEGER NOT NULL DEFAULT 0"))
#: Columns an existing table must have to become an event store (the relay's and the readers').
_OUTBOX_COLUMNS = frozenset({"seq", "id", "topic", "key", "payload", "headers", "delivered_at", "dead_at"})


class SqliteWaiter:
    """Polling: a projection runner on SQLite looks again after the timeout."""

    def wait(self, timeout: float) -> bool:
        time.sleep(timeout)
        return False

    def close(self) -> None:
        pass


EVENT_STORE = SqliteEventStoreSql()
