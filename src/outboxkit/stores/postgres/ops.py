"""PostgreSQL's side of the operator commands (``outboxkit.ops``): statements and lease views."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from outboxkit.core.urls import redact_url
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.ops import DISCARDED, LeaseView, LiveRelay, OpsRunner, OpsStatements
from outboxkit.stores.postgres.connection import connect_sync

# A NULL parameter means "no criterion". Casts give PostgreSQL the parameter types, and since
# psycopg sends the values with each execution the planner folds the unused branches away.
_SELECT = """(%(topic)s::text IS NULL OR o.topic = %(topic)s::text)
    AND (%(key)s::text IS NULL OR o.key = %(key)s::text)
    AND (cardinality(%(ids)s::uuid[]) = 0 OR o.id = ANY(%(ids)s::uuid[]))
    AND (%(since)s::timestamptz IS NULL OR o.created_at >= %(since)s::timestamptz)
    AND (%(until)s::timestamptz IS NULL OR o.created_at < %(until)s::timestamptz)"""

_DEAD = "o.dead_at IS NOT NULL"
# Replay re-publishes what the broker confirmed: delivered rows, minus discarded dead letters
# (they never reached the broker).
_REPLAYABLE = (
    "o.delivered_at IS NOT NULL AND o.dead_at IS NULL"
    f" AND (o.last_error IS NULL OR o.last_error NOT LIKE '{DISCARDED}%%')"
)

# Delivered by a relay (the broker confirmed it), not given up on by `dead-letters discard`.
_CONFIRMED = f"o.dead_at IS NULL AND (o.last_error IS NULL OR o.last_error NOT LIKE '{DISCARDED}%%')"
_LAG = "extract(epoch FROM o.delivered_at - o.created_at)"


def statements(ref: TableRef) -> OpsStatements:
    t, sel = ref.qualified, _SELECT
    replayable = _REPLAYABLE
    return OpsStatements(
        # One pass over the table. Its cost grows with the delivered rows kept, which cleanup bounds.
        topics=f"""SELECT o.topic,
    count(*) FILTER (WHERE o.delivered_at IS NULL AND o.dead_at IS NULL),
    extract(epoch FROM now() - min(o.created_at) FILTER (WHERE o.delivered_at IS NULL AND o.dead_at IS NULL))::float8,
    count(*) FILTER (WHERE o.dead_at IS NOT NULL),
    count(*) FILTER (WHERE o.delivered_at IS NOT NULL AND o.dead_at IS NULL),
    count(*) FILTER (WHERE o.delivered_at IS NOT NULL AND o.dead_at IS NULL AND o.last_error LIKE '{DISCARDED}%%'),
    extract(epoch FROM now() - min(o.delivered_at) FILTER (WHERE o.dead_at IS NULL))::float8
FROM {t} o GROUP BY o.topic ORDER BY o.topic""",
        # Pending rows the relay holds back behind a dead letter of their key (hold_dead_keys).
        held=f"""SELECT count(DISTINCT d.key), (SELECT count(*) FROM {t} o WHERE o.delivered_at IS NULL
    AND o.dead_at IS NULL AND o.key IN (SELECT k.key FROM {t} k WHERE k.dead_at IS NOT NULL))
FROM {t} d WHERE d.dead_at IS NOT NULL""",
        held_topics=f"""SELECT o.topic, count(*) FROM {t} o WHERE o.delivered_at IS NULL AND o.dead_at IS NULL
    AND o.key IN (SELECT k.key FROM {t} k WHERE k.dead_at IS NOT NULL) GROUP BY o.topic""",
        dead_count=f"SELECT count(*) FROM {t} o WHERE {_DEAD} AND {sel}",
        dead_list=f"""SELECT o.seq, o.id::text, o.topic, o.key, o.attempts, o.last_error, o.created_at, o.dead_at
FROM {t} o WHERE {_DEAD} AND {sel} ORDER BY o.seq LIMIT %(limit)s""",
        # Pending again with a fresh attempt budget. The row keeps its seq, so it is still the first
        # of its key and the relay publishes it before the key's later events (G5).
        retry=f"UPDATE {t} o SET dead_at = NULL, attempts = 0 WHERE {_DEAD} AND {sel}",
        # Clearing dead_at is what releases the key: the relay holds keys WHERE dead_at IS NOT NULL.
        discard=f"""UPDATE {t} o SET dead_at = NULL, delivered_at = now(),
    last_error = '{DISCARDED}' || coalesce(o.last_error, '') WHERE {_DEAD} AND {sel}""",
        discard_delete=f"DELETE FROM {t} o WHERE {_DEAD} AND {sel}",
        replay_count=f"SELECT count(*) FROM {t} o WHERE {replayable} AND {sel}",
        # Pending again with the same id and seq: consumers' inboxes drop what they already processed.
        replay=f"UPDATE {t} o SET delivered_at = NULL WHERE {replayable} AND {sel}",
        cutoff="SELECT now() - %(keep)s",
        cleanup_count=f"SELECT count(*) FROM {t} o WHERE o.delivered_at < %(cutoff)s AND o.dead_at IS NULL",
        # One batch = one short transaction. Keys are primary-key seqs (not ctid: ctids repeat across
        # partitions), deleted with an index lookup per seq. The outer DELETE repeats the condition
        # because a row replayed by a concurrent transaction is re-checked on its new version and
        # then skipped: cleanup never deletes a pending or dead row. Paging with seq > %(after)s is
        # fine here (unlike the relay, H1): a row missed now is deleted by the next run.
        cleanup_batch=f"""WITH batch AS MATERIALIZED (
    SELECT o.seq FROM {t} o
    WHERE o.seq > %(after)s AND o.delivered_at < %(cutoff)s AND o.dead_at IS NULL
    ORDER BY o.seq LIMIT %(limit)s
), gone AS (
    DELETE FROM {t} o WHERE o.seq = ANY(ARRAY(SELECT b.seq FROM batch b))
        AND o.delivered_at < %(cutoff)s AND o.dead_at IS NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch), (SELECT max(b.seq) FROM batch b), (SELECT count(*) FROM gone)""",
        activity=f"""SELECT floor(extract(epoch FROM o.delivered_at) / %(step)s)::bigint * %(step)s AS bucket,
    count(*), avg({_LAG})::float8, max({_LAG})::float8
FROM {t} o WHERE o.delivered_at >= now() - %(window)s AND {_CONFIRMED}
GROUP BY bucket ORDER BY bucket""",
    )


class PostgresOps:
    """:class:`~outboxkit.stores.ops.OpsDialect` for PostgreSQL."""

    name = "postgresql"

    def open(self, url: str, ref: TableRef) -> tuple[SyncConnection, str]:
        return connect_sync(url, label="outboxkit-ops"), redact_url(url)

    def statements(self, ref: TableRef) -> OpsStatements:
        return statements(ref)

    def selector_params(
        self, ids: Sequence[str], topic: str | None, key: str | None, since: datetime | None, until: datetime | None
    ) -> dict[str, Any]:
        return {"ids": list(ids), "topic": topic, "key": key, "since": since, "until": until}

    def cutoff_params(self, keep: timedelta) -> dict[str, Any]:
        return {"keep": keep}

    def activity_params(self, window: timedelta, step: int) -> dict[str, Any]:
        return {"window": window, "step": step}

    def cleanup_batch(self, db: OpsRunner, sql: OpsStatements, params: dict[str, Any]) -> tuple[int, int | None, int]:
        selected, last, gone = db.rows(sql.cleanup_batch, params)[0]
        return int(selected), None if last is None else int(last), int(gone)

    def leases(self, db: OpsRunner, ref: TableRef, live_window_s: float) -> LeaseView | None:
        relays, leases = ref.derived("relays"), ref.derived("leases")
        exists = db.rows(
            "SELECT to_regclass(%(relays)s) IS NOT NULL AND to_regclass(%(leases)s) IS NOT NULL",
            {"relays": relays, "leases": leases},
        )[0][0]
        if not exists:
            return None
        live = [
            LiveRelay(r[0], max(0.0, float(r[1] or 0.0)), r[2], dict(r[3] or {}), [int(b) for b in r[4]])
            for r in db.rows(
                f"""SELECT r.owner, extract(epoch FROM now() - r.heartbeat_at)::float8, r.started_at, r.info,
    coalesce(array_agg(l.bucket ORDER BY l.bucket) FILTER (WHERE l.bucket IS NOT NULL), '{{}}')
FROM {relays} r LEFT JOIN {leases} l ON l.owner = r.owner AND l.expires_at > now()
WHERE r.heartbeat_at > now() - make_interval(secs => %(live)s)
GROUP BY r.owner ORDER BY r.owner""",
                {"live": live_window_s},
            )
        ]
        stale = db.rows(
            f"SELECT count(*) FROM {relays} WHERE heartbeat_at <= now() - make_interval(secs => %(live)s)",
            {"live": live_window_s},
        )[0][0]
        total, held, free = db.rows(
            f"""SELECT count(*), count(*) FILTER (WHERE owner IS NOT NULL AND expires_at > now()),
    coalesce(array_agg(bucket ORDER BY bucket)
        FILTER (WHERE owner IS NULL OR expires_at IS NULL OR expires_at <= now()), '{{}}')
FROM {leases}"""
        )[0]
        return LeaseView(live, int(stale), int(total), int(held), [int(b) for b in free])

    def partitioning_recipe(self, ref: TableRef) -> list[str] | None:
        from outboxkit.stores.postgres.partitions import partitioning_recipe

        return partitioning_recipe(ref)
