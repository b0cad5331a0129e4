"""PostgreSQL: the consumer's inbox tables (see ``outboxkit.inbox``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from outboxkit.stores.base import TableRef

#: processed_at of a claim whose handler has not finished (see InboxSql.start_sql)
_UNFINISHED = "'1970-01-01 00:00:00+00'::timestamptz"


class PostgresInbox:
    """:class:`~outboxkit.stores.base.InboxSql` for PostgreSQL."""

    max_event_id = 255  # with a 255-character consumer, far below a btree entry's 2,704 bytes

    def ddl(self, ref: TableRef) -> list[str]:
        t, dead = ref.qualified, ref.derived("dead")
        return [
            *([f'CREATE SCHEMA IF NOT EXISTS "{ref.schema}"'] if ref.schema else []),
            f"""CREATE TABLE IF NOT EXISTS {t} (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
)""",
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('processed_at')} ON {t} (processed_at)",
            f"""CREATE TABLE IF NOT EXISTS {dead} (
    consumer  text NOT NULL,
    event_id  text NOT NULL,
    topic     text NOT NULL,
    key       text,
    payload   bytea NOT NULL,
    headers   text NOT NULL,
    error     text NOT NULL,
    attempts  integer NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
)""",
        ]

    def claim_sql(self, ref: TableRef) -> str:
        # The primary key decides: a concurrent duplicate waits for the first transaction and then
        # inserts nothing, so exactly one of them runs the handler's side effects (G7).
        return f"INSERT INTO {ref.qualified} (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"

    def start_sql(self, ref: TableRef) -> str:
        # The epoch marks "claimed, not finished": only finish_sql, after the handler, sets the time.
        return (
            f"INSERT INTO {ref.qualified} (consumer, event_id, processed_at) VALUES (%s, %s, {_UNFINISHED})"
            " ON CONFLICT DO NOTHING"
        )

    def unfinished_sql(self, ref: TableRef) -> str:
        # FOR UPDATE: two redeliveries of the same event wait for each other; the second re-reads
        # the row after the first committed, finds it finished, and is a duplicate.
        return (
            f"SELECT 1 FROM {ref.qualified} WHERE consumer = %s AND event_id = %s"
            f" AND processed_at = {_UNFINISHED} FOR UPDATE"
        )

    def finish_sql(self, ref: TableRef) -> str:
        return f"UPDATE {ref.qualified} SET processed_at = now() WHERE consumer = %s AND event_id = %s"

    def dead_sql(self, ref: TableRef) -> str:
        return (
            f"INSERT INTO {ref.derived('dead')} (consumer, event_id, topic, key, payload, headers, error, attempts)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        )

    def cleanup(self, ref: TableRef, older_than: timedelta, batch: int) -> tuple[str, Sequence[Any]]:
        # ctid: the cheapest way to delete exactly the rows the subquery found, batch by batch.
        return (
            f"DELETE FROM {ref.qualified} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {ref.qualified}"
            " WHERE processed_at < now() - %s LIMIT %s))",
            (older_than, batch),
        )
