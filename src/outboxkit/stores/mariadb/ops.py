"""MariaDB/MySQL's side of the operator commands (``outboxkit.ops``): statements and lease views."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from outboxkit.core.urls import redact_url
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.mariadb.driver import connect_sync
from outboxkit.stores.mariadb.schema import bind_list, quoted
from outboxkit.stores.ops import DISCARDED, LeaseView, LiveRelay, OpsRunner, OpsStatements

# A NULL parameter means "no criterion"; ``ids`` is a JSON array ('[]' = any id). Times are UTC
# DATETIME(6) values, bound as naive UTC datetimes.
_SELECT = """(%(topic)s IS NULL OR o.topic = %(topic)s)
    AND (%(key)s IS NULL OR o.`key` = %(key)s)
    AND (%(ids)s = '[]' OR JSON_CONTAINS(%(ids)s, JSON_QUOTE(LOWER(o.id))))
    AND (%(since)s IS NULL OR o.created_at >= %(since)s)
    AND (%(until)s IS NULL OR o.created_at < %(until)s)"""
_DEAD = "o.dead_at IS NOT NULL"
_PENDING = "o.delivered_at IS NULL AND o.dead_at IS NULL"
# Replay re-publishes what the broker confirmed: delivered rows, minus discarded dead letters.
_REPLAYABLE = (
    "o.delivered_at IS NOT NULL AND o.dead_at IS NULL"
    f" AND (o.last_error IS NULL OR o.last_error NOT LIKE '{DISCARDED}%%')"
)
# Delivered by a relay (the broker confirmed it), not given up on by `dead-letters discard`.
_CONFIRMED = f"o.dead_at IS NULL AND (o.last_error IS NULL OR o.last_error NOT LIKE '{DISCARDED}%%')"
_LAG = "TIMESTAMPDIFF(MICROSECOND, o.created_at, o.delivered_at) / 1e6"
_AGE = "TIMESTAMPDIFF(MICROSECOND, {col}, UTC_TIMESTAMP(6)) / 1e6"


def statements(ref: TableRef) -> OpsStatements:
    t, sel = quoted(ref), _SELECT
    return OpsStatements(
        # One pass over the table. Its cost grows with the delivered rows kept, which cleanup bounds.
        topics=f"""SELECT o.topic,
    SUM({_PENDING}),
    {_AGE.format(col=f"MIN(CASE WHEN {_PENDING} THEN o.created_at END)")},
    SUM(o.dead_at IS NOT NULL),
    SUM(o.delivered_at IS NOT NULL AND o.dead_at IS NULL),
    -- COALESCE: TRUE AND NULL LIKE ... is NULL, and a topic whose delivered rows all have no
    -- last_error would sum to NULL instead of 0.
    SUM(o.delivered_at IS NOT NULL AND o.dead_at IS NULL AND COALESCE(o.last_error, '') LIKE '{DISCARDED}%%'),
    {_AGE.format(col="MIN(CASE WHEN o.dead_at IS NULL THEN o.delivered_at END)")}
FROM {t} o GROUP BY o.topic ORDER BY o.topic""",
        held=f"""SELECT COUNT(DISTINCT d.`key`), (SELECT COUNT(*) FROM {t} o WHERE {_PENDING}
    AND o.`key` IN (SELECT k.`key` FROM {t} k WHERE k.dead_at IS NOT NULL))
FROM {t} d WHERE d.dead_at IS NOT NULL""",
        held_topics=f"""SELECT o.topic, COUNT(*) FROM {t} o WHERE {_PENDING}
    AND o.`key` IN (SELECT k.`key` FROM {t} k WHERE k.dead_at IS NOT NULL) GROUP BY o.topic""",
        dead_count=f"SELECT COUNT(*) FROM {t} o WHERE {_DEAD} AND {sel}",
        dead_list=f"""SELECT o.seq, o.id, o.topic, o.`key`, o.attempts, o.last_error, o.created_at, o.dead_at
FROM {t} o WHERE {_DEAD} AND {sel} ORDER BY o.seq LIMIT %(limit)s""",
        # Pending again with a fresh attempt budget, keeping its seq: still the first of its key (G5).
        retry=f"UPDATE {t} o SET o.dead_at = NULL, o.attempts = 0 WHERE {_DEAD} AND {sel}",
        # Clearing dead_at is what releases the key: the relay holds keys WHERE dead_at IS NOT NULL.
        # (MariaDB applies SET left to right: last_error is rewritten before dead_at is cleared.)
        discard=f"""UPDATE {t} o SET o.last_error = CONCAT('{DISCARDED}', COALESCE(o.last_error, '')),
    o.delivered_at = UTC_TIMESTAMP(6), o.dead_at = NULL WHERE {_DEAD} AND {sel}""",
        discard_delete=f"DELETE o FROM {t} o WHERE {_DEAD} AND {sel}",
        replay_count=f"SELECT COUNT(*) FROM {t} o WHERE {_REPLAYABLE} AND {sel}",
        # Pending again with the same id and seq: consumers' inboxes drop what they already processed.
        replay=f"UPDATE {t} o SET o.delivered_at = NULL WHERE {_REPLAYABLE} AND {sel}",
        cutoff="SELECT UTC_TIMESTAMP(6) - INTERVAL %(keep)s MICROSECOND",
        cleanup_count=f"SELECT COUNT(*) FROM {t} o WHERE o.delivered_at < %(cutoff)s AND o.dead_at IS NULL",
        # One batch: the next seqs in primary-key order (FORCE INDEX: the delivered_at index would
        # need a sort of every old row per batch), then one short DELETE of those seqs that
        # repeats the condition, evaluated on the locked, latest row version: a row replayed
        # meanwhile is skipped, so cleanup never deletes a pending or dead row. Paging with
        # seq > after is fine here (unlike the relay, H1): a row missed now goes next run.
        cleanup_batch=f"""SELECT o.seq FROM {t} o FORCE INDEX (PRIMARY)
WHERE o.seq > %(after)s AND o.delivered_at < %(cutoff)s AND o.dead_at IS NULL
ORDER BY o.seq LIMIT %(limit)s""",
        cleanup_delete=f"""DELETE FROM {t} WHERE seq IN ({{seqs}}) AND delivered_at < %(cutoff)s AND dead_at IS NULL""",
        activity=f"""SELECT FLOOR(TIMESTAMPDIFF(SECOND, '1970-01-01', o.delivered_at) / %(step)s) * %(step)s AS bucket,
    COUNT(*), AVG({_LAG}), MAX({_LAG})
FROM {t} o WHERE o.delivered_at >= UTC_TIMESTAMP(6) - INTERVAL %(window)s MICROSECOND AND {_CONFIRMED}
GROUP BY bucket ORDER BY bucket""",
    )


class MariaDbOps:
    """:class:`~outboxkit.stores.ops.OpsDialect` for MariaDB/MySQL."""

    name = "mariadb"

    def open(self, url: str, ref: TableRef) -> tuple[SyncConnection, str]:
        return connect_sync(url, label="outboxkit-ops"), redact_url(url)

    def statements(self, ref: TableRef) -> OpsStatements:
        return statements(ref)

    def selector_params(
        self, ids: Sequence[str], topic: str | None, key: str | None, since: datetime | None, until: datetime | None
    ) -> dict[str, Any]:
        def naive(moment: datetime | None) -> datetime | None:
            return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)

        return {"ids": json.dumps(list(ids)), "topic": topic, "key": key, "since": naive(since), "until": naive(until)}

    def cutoff_params(self, keep: timedelta) -> dict[str, Any]:
        return {"keep": int(keep.total_seconds() * 1_000_000)}

    def activity_params(self, window: timedelta, step: int) -> dict[str, Any]:
        return {"window": int(window.total_seconds() * 1_000_000), "step": step}

    def cleanup_batch(self, db: OpsRunner, sql: OpsStatements, params: dict[str, Any]) -> tuple[int, int | None, int]:
        seqs = [int(r[0]) for r in db.rows(sql.cleanup_batch, params)]
        if not seqs:
            return 0, None, 0
        in_seqs, bound = bind_list("s", seqs)
        gone = db.run(sql.cleanup_delete.format(seqs=in_seqs), {**bound, "cutoff": params["cutoff"]})
        return len(seqs), seqs[-1], gone

    def leases(self, db: OpsRunner, ref: TableRef, live_window_s: float) -> LeaseView | None:
        relays, leases = quoted(ref, "relays"), quoted(ref, "leases")
        live_us = int(live_window_s * 1_000_000)
        live = [
            LiveRelay(
                r[0],
                max(0.0, float(r[1] or 0.0)),
                r[2].replace(tzinfo=UTC),
                json.loads(r[3] or "{}"),
                [int(b) for b in json.loads(r[4] or "[]")],
            )
            for r in db.rows(
                f"""SELECT r.owner, TIMESTAMPDIFF(MICROSECOND, r.heartbeat_at, UTC_TIMESTAMP(6)) / 1e6, r.started_at,
    r.info, (SELECT JSON_ARRAYAGG(l.bucket) FROM {leases} l
             WHERE l.owner = r.owner AND l.expires_at > UTC_TIMESTAMP(6))
FROM {relays} r WHERE r.heartbeat_at > UTC_TIMESTAMP(6) - INTERVAL %(live)s MICROSECOND ORDER BY r.owner""",
                {"live": live_us},
            )
        ]
        stale = db.rows(
            f"SELECT COUNT(*) FROM {relays} WHERE heartbeat_at <= UTC_TIMESTAMP(6) - INTERVAL %(live)s MICROSECOND",
            {"live": live_us},
        )[0][0]
        total, held = db.rows(
            f"SELECT COUNT(*), COALESCE(SUM(owner IS NOT NULL AND expires_at > UTC_TIMESTAMP(6)), 0) FROM {leases}"
        )[0]
        free = db.rows(
            f"SELECT bucket FROM {leases} WHERE owner IS NULL OR expires_at IS NULL"
            " OR expires_at <= UTC_TIMESTAMP(6) ORDER BY bucket"
        )
        return LeaseView(live, int(stale), int(total), int(held), [int(r[0]) for r in free])

    def partitioning_recipe(self, ref: TableRef) -> list[str] | None:
        return None
