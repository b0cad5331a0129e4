"""SQLite: the consumer's inbox tables (see ``outboxkit.inbox``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef

_NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
#: processed_at of a claim whose handler has not finished (see InboxSql.start_sql)
_UNFINISHED = "'1970-01-01T00:00:00.000Z'"


class SqliteInbox:
    """:class:`~outboxkit.stores.base.InboxSql` for SQLite."""

    max_event_id = 255  # no limit in SQLite; the same bound as PostgreSQL, for portable consumers

    def ddl(self, ref: TableRef) -> list[str]:
        if ref.schema:
            raise ConfigurationError("SQLite has no schemas; leave schema unset")
        t, dead = ref.qualified, ref.derived("dead")
        return [
            f"""CREATE TABLE IF NOT EXISTS {t} (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at TEXT NOT NULL DEFAULT {_NOW},
    PRIMARY KEY (consumer, event_id)
)""",
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('processed_at')} ON {t} (processed_at)",
            f"""CREATE TABLE IF NOT EXISTS {dead} (
    consumer  text NOT NULL,
    event_id  text NOT NULL,
    topic     text NOT NULL,
    key       text,
    payload   BLOB NOT NULL,
    headers   text NOT NULL,
    error     text NOT NULL,
    attempts  integer NOT NULL,
    failed_at TEXT NOT NULL DEFAULT {_NOW},
    PRIMARY KEY (consumer, event_id)
)""",
        ]

    def claim_sql(self, ref: TableRef) -> str:
        # SQLite runs one writer at a time: the primary key turns a duplicate into no row changed.
        return f"INSERT INTO {ref.qualified} (consumer, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING"

    def start_sql(self, ref: TableRef) -> str:
        # The epoch marks "claimed, not finished": only finish_sql, after the handler, sets the time.
        return (
            f"INSERT INTO {ref.qualified} (consumer, event_id, processed_at) VALUES (?, ?, {_UNFINISHED})"
            " ON CONFLICT DO NOTHING"
        )

    def unfinished_sql(self, ref: TableRef) -> str:
        # No FOR UPDATE in SQLite, and none needed: the claim's INSERT took the single write lock.
        return f"SELECT 1 FROM {ref.qualified} WHERE consumer = ? AND event_id = ? AND processed_at = {_UNFINISHED}"

    def finish_sql(self, ref: TableRef) -> str:
        return f"UPDATE {ref.qualified} SET processed_at = {_NOW} WHERE consumer = ? AND event_id = ?"

    def dead_sql(self, ref: TableRef) -> str:
        return (
            f"INSERT INTO {ref.derived('dead')} (consumer, event_id, topic, key, payload, headers, error, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        )

    def cleanup(self, ref: TableRef, older_than: timedelta, batch: int) -> tuple[str, Sequence[Any]]:
        return (
            f"DELETE FROM {ref.qualified} WHERE rowid IN (SELECT rowid FROM {ref.qualified}"
            " WHERE processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) LIMIT ?)",
            (f"-{int(older_than.total_seconds())} seconds", batch),
        )
