"""SQLite's side of the operator commands (``outboxkit.ops``): statements; a single relay, no leases."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from outboxkit.errors import ConfigurationError, SchemaError
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.ops import DISCARDED, LeaseView, OpsRunner, OpsStatements

# SQLite keeps times as ISO-8601 UTC text in exactly this format (stores/sqlite/store.py), so plain
# text comparison orders them; every time we bind or compute for SQLite must use the same format.
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def sqlite_text(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_SELECT = """(:topic IS NULL OR o.topic = :topic)
    AND (:key IS NULL OR o.key = :key)
    AND (:ids = '[]' OR lower(o.id) IN (SELECT value FROM json_each(:ids)))
    AND (:since IS NULL OR o.created_at >= :since)
    AND (:until IS NULL OR o.created_at < :until)"""
_DEAD = "o.dead_at IS NOT NULL"
# Replay re-publishes what the broker confirmed: delivered rows, minus discarded dead letters.
_REPLAYABLE = (
    "o.delivered_at IS NOT NULL AND o.dead_at IS NULL"
    f" AND (o.last_error IS NULL OR o.last_error NOT LIKE '{DISCARDED}%')"
)

# Delivered by a relay (the broker confirmed it), not given up on by `dead-letters discard`.
_CONFIRMED = f"o.dead_at IS NULL AND (o.last_error IS NULL OR o.last_error NOT LIKE '{DISCARDED}%')"
_LAG = "(julianday(o.delivered_at) - julianday(o.created_at)) * 86400.0"


def statements(ref: TableRef) -> OpsStatements:
    t, sel = ref.qualified, _SELECT
    age = "(julianday('now') - julianday(min({col}) FILTER (WHERE {cond}))) * 86400.0"
    pending = "o.delivered_at IS NULL AND o.dead_at IS NULL"
    return OpsStatements(
        topics=f"""SELECT o.topic,
    count(*) FILTER (WHERE {pending}),
    {age.format(col="o.created_at", cond=pending)},
    count(*) FILTER (WHERE o.dead_at IS NOT NULL),
    count(*) FILTER (WHERE o.delivered_at IS NOT NULL AND o.dead_at IS NULL),
    count(*) FILTER (WHERE o.delivered_at IS NOT NULL AND o.dead_at IS NULL AND o.last_error LIKE '{DISCARDED}%'),
    {age.format(col="o.delivered_at", cond="o.dead_at IS NULL")}
FROM {t} o GROUP BY o.topic ORDER BY o.topic""",
        held=f"""SELECT count(DISTINCT d.key), (SELECT count(*) FROM {t} o WHERE {pending}
    AND o.key IN (SELECT k.key FROM {t} k WHERE k.dead_at IS NOT NULL))
FROM {t} d WHERE d.dead_at IS NOT NULL""",
        held_topics=f"""SELECT o.topic, count(*) FROM {t} o WHERE {pending}
    AND o.key IN (SELECT k.key FROM {t} k WHERE k.dead_at IS NOT NULL) GROUP BY o.topic""",
        dead_count=f"SELECT count(*) FROM {t} o WHERE {_DEAD} AND {sel}",
        dead_list=f"""SELECT o.seq, o.id, o.topic, o.key, o.attempts, o.last_error, o.created_at, o.dead_at
FROM {t} o WHERE {_DEAD} AND {sel} ORDER BY o.seq LIMIT :limit""",
        # Pending again, keeping its seq: still the first of its key (G5).
        retry=f"UPDATE {t} AS o SET dead_at = NULL, attempts = 0 WHERE {_DEAD} AND {sel}",
        discard=f"""UPDATE {t} AS o SET dead_at = NULL, delivered_at = {_NOW},
    last_error = '{DISCARDED}' || coalesce(o.last_error, '') WHERE {_DEAD} AND {sel}""",
        discard_delete=f"DELETE FROM {t} AS o WHERE {_DEAD} AND {sel}",
        replay_count=f"SELECT count(*) FROM {t} o WHERE {_REPLAYABLE} AND {sel}",
        replay=f"UPDATE {t} AS o SET delivered_at = NULL WHERE {_REPLAYABLE} AND {sel}",
        cutoff="SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :keep)",
        cleanup_count=f"SELECT count(*) FROM {t} o WHERE o.delivered_at < :cutoff AND o.dead_at IS NULL",
        # seq is the rowid: each batch walks the primary key. SQLite runs one writer at a time and a
        # statement is atomic, so the rows selected are the rows deleted.
        cleanup_batch=f"""DELETE FROM {t} WHERE seq IN (
    SELECT o.seq FROM {t} o
    WHERE o.seq > :after AND o.delivered_at < :cutoff AND o.dead_at IS NULL
    ORDER BY o.seq LIMIT :limit
) RETURNING seq""",
        # julianday 2440587.5 is 1970-01-01: buckets on epoch seconds, like the other databases.
        activity=f"""SELECT
    CAST((julianday(o.delivered_at) - 2440587.5) * 86400.0 / :step AS INTEGER) * :step AS bucket,
    count(*), avg({_LAG}), max({_LAG})
FROM {t} o WHERE o.delivered_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :window) AND {_CONFIRMED}
GROUP BY bucket ORDER BY bucket""",
    )


class SqliteOps:
    """:class:`~outboxkit.stores.ops.OpsDialect` for SQLite."""

    name = "sqlite"

    def open(self, url: str, ref: TableRef) -> tuple[SyncConnection, str]:
        from outboxkit.stores.sqlite.store import connect, sqlite_path

        if ref.schema:
            raise ConfigurationError("SQLite has no schemas; leave schema unset")
        path = sqlite_path(url)
        if not os.path.exists(path):
            raise SchemaError(f"SQLite file {path} does not exist: run `outboxkit migrate` first")
        return connect(path), path

    def statements(self, ref: TableRef) -> OpsStatements:
        return statements(ref)

    def selector_params(
        self, ids: Sequence[str], topic: str | None, key: str | None, since: datetime | None, until: datetime | None
    ) -> dict[str, Any]:
        return {
            "ids": json.dumps(list(ids)),
            "topic": topic,
            "key": key,
            "since": sqlite_text(since) if since else None,
            "until": sqlite_text(until) if until else None,
        }

    def cutoff_params(self, keep: timedelta) -> dict[str, Any]:
        return {"keep": f"-{keep.total_seconds():.3f} seconds"}

    def activity_params(self, window: timedelta, step: int) -> dict[str, Any]:
        return {"window": f"-{window.total_seconds():.3f} seconds", "step": step}

    def cleanup_batch(self, db: OpsRunner, sql: OpsStatements, params: dict[str, Any]) -> tuple[int, int | None, int]:
        seqs = [int(r[0]) for r in db.rows(sql.cleanup_batch, params)]
        return len(seqs), max(seqs, default=None), len(seqs)

    def leases(self, db: OpsRunner, ref: TableRef, live_window_s: float) -> LeaseView | None:
        return None  # one relay per SQLite file, held by a process lock

    def partitioning_recipe(self, ref: TableRef) -> list[str] | None:
        return None
