"""MariaDB/MySQL: the consumer's inbox tables (see ``outboxkit.inbox``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb.schema import Q, quoted

#: processed_at of a claim whose handler has not finished (see InboxSql.start_sql)
_UNFINISHED = "'1970-01-01 00:00:00'"


class MariaDbInbox:
    """:class:`~outboxkit.stores.base.InboxSql` for MariaDB/MySQL."""

    max_event_id = 64  # event_id VARCHAR(64): INSERT IGNORE would cut a longer id silently

    def ddl(self, ref: TableRef) -> list[str]:
        t, dead = quoted(ref), quoted(ref, "dead")
        return [
            *([f"CREATE DATABASE IF NOT EXISTS {Q}{ref.schema}{Q}"] if ref.schema else []),
            f"""CREATE TABLE IF NOT EXISTS {t} (
    consumer     VARCHAR(255) NOT NULL,
    event_id     VARCHAR(64) NOT NULL,
    processed_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
    PRIMARY KEY (consumer, event_id),
    KEY {ref.index_name("processed_at", Q)} (processed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
            f"""CREATE TABLE IF NOT EXISTS {dead} (
    consumer  VARCHAR(255) NOT NULL,
    event_id  VARCHAR(64) NOT NULL,
    topic     VARCHAR(255) NOT NULL,
    `key`     VARCHAR(1024),
    payload   LONGBLOB NOT NULL,
    headers   LONGTEXT NOT NULL,
    error     LONGTEXT NOT NULL,
    attempts  INT NOT NULL,
    failed_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
    PRIMARY KEY (consumer, event_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        ]

    def claim_sql(self, ref: TableRef) -> str:
        # INSERT IGNORE turns a duplicate key into "0 rows" and nothing else: a concurrent duplicate
        # waits on the first transaction's key lock, then inserts nothing (G7). (IGNORE also
        # downgrades other errors to warnings, but these two columns cannot fail any other way.)
        return f"INSERT IGNORE INTO {quoted(ref)} (consumer, event_id) VALUES (%s, %s)"

    def start_sql(self, ref: TableRef) -> str:
        # The epoch marks "claimed, not finished": only finish_sql, after the handler, sets the time.
        # (DDL in a handler commits this row at once: the mark is what tells a retry to go on.)
        return f"INSERT IGNORE INTO {quoted(ref)} (consumer, event_id, processed_at) VALUES (%s, %s, {_UNFINISHED})"

    def unfinished_sql(self, ref: TableRef) -> str:
        # A locking read sees the latest committed row, not the snapshot: a concurrent redelivery
        # that finished first turns this into "no row", a duplicate. A shared lock, not FOR UPDATE:
        # INSERT IGNORE already holds one on the row it found, and two duplicates upgrading theirs
        # to exclusive would deadlock. (Two takers of one unfinished row meet at finish_sql instead:
        # InnoDB rolls one back, which counts as its failed attempt; the other commits.)
        return (
            f"SELECT 1 FROM {quoted(ref)} WHERE consumer = %s AND event_id = %s"
            f" AND processed_at = {_UNFINISHED} LOCK IN SHARE MODE"
        )

    def finish_sql(self, ref: TableRef) -> str:
        return f"UPDATE {quoted(ref)} SET processed_at = UTC_TIMESTAMP(6) WHERE consumer = %s AND event_id = %s"

    def dead_sql(self, ref: TableRef) -> str:
        return (
            f"INSERT IGNORE INTO {quoted(ref, 'dead')} (consumer, event_id, topic, `key`, payload, headers, error,"
            " attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        )

    def cleanup(self, ref: TableRef, older_than: timedelta, batch: int) -> tuple[str, Sequence[Any]]:
        return (
            f"DELETE FROM {quoted(ref)} WHERE processed_at < UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND LIMIT %s",
            (int(older_than.total_seconds() * 1_000_000), batch),
        )
