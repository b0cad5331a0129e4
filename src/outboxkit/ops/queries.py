"""SQL and functions behind ``outboxkit status | dead-letters | replay | cleanup``.

Every statement exists once per database (PostgreSQL, SQLite) as readable SQL with bound
parameters; identifiers come only from a validated :class:`~outboxkit.stores.base.TableRef`.
Connections are sync and in autocommit mode: each statement is its own short transaction, so an
operator command never holds locks across a prompt or between cleanup batches.

Three states of a row, as the relay sees them (docs/schema.md)::

    pending    delivered_at IS NULL AND dead_at IS NULL       the relay will publish it
    dead       dead_at IS NOT NULL                            a dead letter; holds its key (H5)
    delivered  delivered_at IS NOT NULL AND dead_at IS NULL   retained for replay until cleanup
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from outboxkit.core.urls import redact_url, scheme_of
from outboxkit.errors import ConfigurationError, SchemaError, UnavailableError
from outboxkit.stores.base import TableRef

Dialect = Literal["postgresql", "sqlite"]

#: Prefix of ``last_error`` on dead letters discarded by ``dead-letters discard`` (marked mode).
DISCARDED = "discarded: "
#: A relay whose heartbeat is older than this is not counted as live.
LIVE_WINDOW_S = 15

# SQLite keeps times as ISO-8601 UTC text in exactly this format (stores/sqlite.py), so plain text
# comparison orders them; every time we bind or compute for SQLite must use the same format.
_SQLITE_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _sqlite_text(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------------------------
# Input parsing (pure)

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` or combinations such as ``1d12h``."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_PART.sub("", compact):
        raise ConfigurationError(f"invalid duration {text!r}: use e.g. 7d, 12h, 30m, 45s or 1d12h")
    return timedelta(seconds=sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(compact)))


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (UTC unless it says otherwise) or a duration meaning "that long ago"."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            return (now or datetime.now(UTC)) - parse_duration(text)
        except ConfigurationError:
            raise ConfigurationError(
                f"invalid time {text!r}: use ISO-8601 (2026-11-26T10:00:00Z) or a duration ago (2h)"
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _event_ids(ids: Sequence[str]) -> list[str]:
    out = []
    for raw in ids:
        try:
            out.append(str(uuid.UUID(raw.strip())))
        except ValueError:
            raise ConfigurationError(f"invalid event id {raw!r}: expected a UUID") from None
    return out


@dataclass(frozen=True)
class Selector:
    """Which rows a command touches. Criteria combine with AND; ``everything`` must be explicit."""

    ids: tuple[str, ...] = ()
    topic: str | None = None
    key: str | None = None
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until
    everything: bool = False

    @property
    def empty(self) -> bool:
        return not (self.ids or self.topic is not None or self.key is not None or self.since or self.until)

    def params(self, dialect: Dialect) -> dict[str, Any]:
        ids = _event_ids(self.ids)
        if dialect == "postgresql":
            return {"ids": ids, "topic": self.topic, "key": self.key, "since": self.since, "until": self.until}
        return {
            "ids": json.dumps(ids),
            "topic": self.topic,
            "key": self.key,
            "since": _sqlite_text(self.since) if self.since else None,
            "until": _sqlite_text(self.until) if self.until else None,
        }


# --------------------------------------------------------------------------------------------
# SQL, once per database

# A NULL parameter means "no criterion". Casts give PostgreSQL the parameter types, and since
# psycopg sends the values with each execution the planner folds the unused branches away.
_PG_SELECT = """(%(topic)s::text IS NULL OR o.topic = %(topic)s::text)
    AND (%(key)s::text IS NULL OR o.key = %(key)s::text)
    AND (cardinality(%(ids)s::uuid[]) = 0 OR o.id = ANY(%(ids)s::uuid[]))
    AND (%(since)s::timestamptz IS NULL OR o.created_at >= %(since)s::timestamptz)
    AND (%(until)s::timestamptz IS NULL OR o.created_at < %(until)s::timestamptz)"""
_SQLITE_SELECT = """(:topic IS NULL OR o.topic = :topic)
    AND (:key IS NULL OR o.key = :key)
    AND (:ids = '[]' OR lower(o.id) IN (SELECT value FROM json_each(:ids)))
    AND (:since IS NULL OR o.created_at >= :since)
    AND (:until IS NULL OR o.created_at < :until)"""

_DEAD = "o.dead_at IS NOT NULL"
# Replay re-publishes what the broker confirmed: delivered rows, minus discarded dead letters
# (they never reached the broker).
_REPLAYABLE = (
    "o.delivered_at IS NOT NULL AND o.dead_at IS NULL AND (o.last_error IS NULL OR o.last_error NOT LIKE '{d}%%')"
)


@dataclass(frozen=True)
class _Sql:
    topics: str
    held: str
    dead_count: str
    dead_list: str
    retry: str
    discard: str
    discard_delete: str
    replay_count: str
    replay: str
    cutoff: str
    cleanup_count: str
    cleanup_batch: str


def _pg_sql(ref: TableRef) -> _Sql:
    t, sel = ref.qualified, _PG_SELECT
    replayable = _REPLAYABLE.format(d=DISCARDED)
    return _Sql(
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
    )


def _sqlite_sql(ref: TableRef) -> _Sql:
    t, sel = ref.qualified, _SQLITE_SELECT
    replayable = _REPLAYABLE.format(d=DISCARDED).replace("%%", "%")
    age = "(julianday('now') - julianday(min({col}) FILTER (WHERE {cond}))) * 86400.0"
    pending = "o.delivered_at IS NULL AND o.dead_at IS NULL"
    return _Sql(
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
        dead_count=f"SELECT count(*) FROM {t} o WHERE {_DEAD} AND {sel}",
        dead_list=f"""SELECT o.seq, o.id, o.topic, o.key, o.attempts, o.last_error, o.created_at, o.dead_at
FROM {t} o WHERE {_DEAD} AND {sel} ORDER BY o.seq LIMIT :limit""",
        retry=f"UPDATE {t} AS o SET dead_at = NULL, attempts = 0 WHERE {_DEAD} AND {sel}",
        discard=f"""UPDATE {t} AS o SET dead_at = NULL, delivered_at = {_SQLITE_NOW},
    last_error = '{DISCARDED}' || coalesce(o.last_error, '') WHERE {_DEAD} AND {sel}""",
        discard_delete=f"DELETE FROM {t} AS o WHERE {_DEAD} AND {sel}",
        replay_count=f"SELECT count(*) FROM {t} o WHERE {replayable} AND {sel}",
        replay=f"UPDATE {t} AS o SET delivered_at = NULL WHERE {replayable} AND {sel}",
        cutoff="SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :keep)",
        cleanup_count=f"SELECT count(*) FROM {t} o WHERE o.delivered_at < :cutoff AND o.dead_at IS NULL",
        # seq is the rowid: each batch walks the primary key. SQLite runs one writer at a time and a
        # statement is atomic, so the rows selected are the rows deleted.
        cleanup_batch=f"""DELETE FROM {t} WHERE seq IN (
    SELECT o.seq FROM {t} o
    WHERE o.seq > :after AND o.delivered_at < :cutoff AND o.dead_at IS NULL
    ORDER BY o.seq LIMIT :limit
) RETURNING seq""",
    )


# --------------------------------------------------------------------------------------------
# Connections


class Db:
    """A sync, autocommit connection to the outbox's database, with its SQL."""

    def __init__(self, dialect: Dialect, conn: Any, ref: TableRef, where: str) -> None:
        self.dialect: Dialect = dialect
        self.ref = ref
        self.sql = _pg_sql(ref) if dialect == "postgresql" else _sqlite_sql(ref)
        self._conn = conn
        self._where = where

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self._execute(sql, params or {})
        return list(cur.fetchall()) if cur.description else []

    def run(self, sql: str, params: dict[str, Any] | None = None) -> int:
        """Execute; returns the number of rows changed."""
        return int(self._execute(sql, params or {}).rowcount)

    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        if self.dialect == "sqlite":
            import sqlite3

            try:
                return self._conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    raise SchemaError(
                        f"no outbox {self.ref.qualified} in {self._where}: run `outboxkit migrate`"
                    ) from None
                raise UnavailableError(f"SQLite {self._where}: {exc}") from None
        import psycopg

        try:
            return self._conn.execute(sql, params)
        except psycopg.errors.UndefinedTable:
            raise SchemaError(f"no outbox {self.ref.qualified} at {self._where}: run `outboxkit migrate`") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnavailableError(f"PostgreSQL at {self._where} is unavailable: {reason}") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Db:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_db(url: str, ref: TableRef) -> Db:
    """Connect for operator work (application_name ``outboxkit-ops`` on PostgreSQL)."""
    scheme = scheme_of(url)
    if scheme == "sqlite":
        from outboxkit.stores.sqlite import connect, sqlite_path

        if ref.schema:
            raise ConfigurationError("SQLite has no schemas; leave schema unset")
        path = sqlite_path(url)
        if not os.path.exists(path):
            raise SchemaError(f"SQLite file {path} does not exist: run `outboxkit migrate` first")
        return Db("sqlite", connect(path), ref, path)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        import psycopg

        libpq = "postgresql://" + url.split("://", 1)[1]
        try:
            conn = psycopg.connect(libpq, autocommit=True, connect_timeout=5, application_name="outboxkit-ops")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnavailableError(f"PostgreSQL at {redact_url(url)} is unavailable: {reason}") from None
        return Db("postgresql", conn, ref, redact_url(url))
    raise ConfigurationError(f"unsupported database URL {redact_url(url)!r}: use postgresql://... or sqlite:///path.db")


# --------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class TopicStatus:
    topic: str
    pending: int
    oldest_pending_age_s: float | None
    dead: int
    delivered: int
    discarded: int
    oldest_delivered_age_s: float | None


@dataclass(frozen=True)
class RelayStatus:
    owner: str
    heartbeat_age_s: float
    started_at: str
    info: dict[str, Any]
    buckets: list[int]


@dataclass(frozen=True)
class Status:
    """What ``outboxkit status --json`` prints (keys documented in docs/operations.md)."""

    database: Dialect
    table: str
    topics: list[TopicStatus]
    dead_keys: int
    held_pending: int
    mode: Literal["leases", "single"]
    relays: list[RelayStatus] = field(default_factory=list)
    stale_relays: int | None = None
    buckets_total: int | None = None
    buckets_held: int | None = None
    buckets_free: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        ages = [t.oldest_pending_age_s for t in self.topics if t.oldest_pending_age_s is not None]
        kept = [t.oldest_delivered_age_s for t in self.topics if t.oldest_delivered_age_s is not None]
        return {
            "database": self.database,
            "table": self.table,
            "pending": sum(t.pending for t in self.topics),
            "oldest_pending_age_s": max(ages) if ages else None,
            "dead": sum(t.dead for t in self.topics),
            "dead_keys": self.dead_keys,
            "held_pending": self.held_pending,
            "delivered": sum(t.delivered for t in self.topics),
            "discarded": sum(t.discarded for t in self.topics),
            "oldest_delivered_age_s": max(kept) if kept else None,
            "topics": [asdict(t) for t in self.topics],
            "relays": {
                "mode": self.mode,
                "live": [asdict(r) for r in self.relays],
                "stale": self.stale_relays,
                "buckets_total": self.buckets_total,
                "buckets_held": self.buckets_held,
                "buckets_free": self.buckets_free,
            },
        }


def _age(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))


def status(db: Db) -> Status:
    topics = [
        TopicStatus(r[0], int(r[1]), _age(r[2]), int(r[3]), int(r[4]), int(r[5]), _age(r[6]))
        for r in db.rows(db.sql.topics)
    ]
    held = db.rows(db.sql.held)[0]
    base = Status(db.dialect, db.ref.qualified, topics, int(held[0]), int(held[1] or 0), "single")
    if db.dialect != "postgresql":
        return base
    relays, leases = db.ref.derived("relays"), db.ref.derived("leases")
    exists = db.rows(
        "SELECT to_regclass(%(relays)s) IS NOT NULL AND to_regclass(%(leases)s) IS NOT NULL",
        {"relays": relays, "leases": leases},
    )[0][0]
    if not exists:
        return base
    live = [
        RelayStatus(r[0], _age(r[1]) or 0.0, _iso(r[2]), dict(r[3] or {}), [int(b) for b in r[4]])
        for r in db.rows(
            f"""SELECT r.owner, extract(epoch FROM now() - r.heartbeat_at)::float8, r.started_at, r.info,
    coalesce(array_agg(l.bucket ORDER BY l.bucket) FILTER (WHERE l.bucket IS NOT NULL), '{{}}')
FROM {relays} r LEFT JOIN {leases} l ON l.owner = r.owner AND l.expires_at > now()
WHERE r.heartbeat_at > now() - make_interval(secs => %(live)s)
GROUP BY r.owner ORDER BY r.owner""",
            {"live": LIVE_WINDOW_S},
        )
    ]
    stale = db.rows(
        f"SELECT count(*) FROM {relays} WHERE heartbeat_at <= now() - make_interval(secs => %(live)s)",
        {"live": LIVE_WINDOW_S},
    )[0][0]
    total, held_buckets, free = db.rows(
        f"""SELECT count(*), count(*) FILTER (WHERE owner IS NOT NULL AND expires_at > now()),
    coalesce(array_agg(bucket ORDER BY bucket)
        FILTER (WHERE owner IS NULL OR expires_at IS NULL OR expires_at <= now()), '{{}}')
FROM {leases}"""
    )[0]
    return Status(
        db.dialect,
        db.ref.qualified,
        topics,
        base.dead_keys,
        base.held_pending,
        "leases",
        live,
        int(stale),
        int(total),
        int(held_buckets),
        [int(b) for b in free],
    )


# --------------------------------------------------------------------------------------------
# dead letters


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    id: str
    topic: str
    key: str | None
    attempts: int
    last_error: str | None
    created_at: str
    dead_at: str


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).isoformat()


def _require_selection(selector: Selector) -> None:
    # An empty selector matches every row: callers must say so (everything=True).
    if selector.empty and not selector.everything:
        raise ConfigurationError("say which dead letters: ids, topic, key, or everything")


def list_dead(db: Db, selector: Selector, limit: int) -> tuple[int, list[DeadLetter]]:
    """(total matching, the first ``limit`` of them in seq order)."""
    params = selector.params(db.dialect)
    total = int(db.rows(db.sql.dead_count, params)[0][0])
    rows = db.rows(db.sql.dead_list, {**params, "limit": limit})
    return total, [DeadLetter(r[0], str(r[1]), r[2], r[3], r[4], r[5], _iso(r[6]), _iso(r[7])) for r in rows]


def count_dead(db: Db, selector: Selector) -> int:
    return int(db.rows(db.sql.dead_count, selector.params(db.dialect))[0][0])


def retry_dead(db: Db, selector: Selector) -> int:
    """Make matching dead letters pending again (attempts 0, last_error kept)."""
    _require_selection(selector)
    return db.run(db.sql.retry, selector.params(db.dialect))


def discard_dead(db: Db, selector: Selector, *, delete: bool = False) -> int:
    """Give up on matching dead letters: mark them delivered with ``last_error`` prefixed
    ``discarded: `` (kept until cleanup, for the record), or delete them. Either way their keys
    are released."""
    _require_selection(selector)
    return db.run(db.sql.discard_delete if delete else db.sql.discard, selector.params(db.dialect))


# --------------------------------------------------------------------------------------------
# replay


def count_replay(db: Db, selector: Selector) -> int:
    return int(db.rows(db.sql.replay_count, selector.params(db.dialect))[0][0])


def replay(db: Db, selector: Selector) -> int:
    """Make matching delivered rows pending again; returns how many."""
    if selector.empty:
        raise ConfigurationError("replay needs a selector: --topic, --key, --id or --since")
    return db.run(db.sql.replay, selector.params(db.dialect))


# --------------------------------------------------------------------------------------------
# cleanup (retention, hazard H3)


@dataclass(frozen=True)
class CleanupProgress:
    deleted: int
    batches: int
    seconds: float
    cutoff: str
    done: bool

    @property
    def rows_per_s(self) -> float:
        return self.deleted / self.seconds if self.seconds > 0 else 0.0


def cleanup_cutoff(db: Db, keep: timedelta) -> Any:
    """The database's now() minus ``keep``: the database clock decides, not the operator's."""
    if db.dialect == "postgresql":
        return db.rows(db.sql.cutoff, {"keep": keep})[0][0]
    return db.rows(db.sql.cutoff, {"keep": f"-{keep.total_seconds():.3f} seconds"})[0][0]


def count_cleanup(db: Db, keep: timedelta) -> int:
    return int(db.rows(db.sql.cleanup_count, {"cutoff": cleanup_cutoff(db, keep)})[0][0])


def cleanup(db: Db, keep: timedelta, batch: int = 10_000) -> Iterator[CleanupProgress]:
    """Delete delivered rows whose ``delivered_at`` is older than ``keep``, ``batch`` rows per
    transaction, yielding progress after each batch. Pending and dead rows are never deleted."""
    if batch < 1:
        raise ConfigurationError("--batch must be at least 1")
    cutoff = cleanup_cutoff(db, keep)
    after, deleted, batches, start = 0, 0, 0, time.perf_counter()
    while True:
        params = {"after": after, "cutoff": cutoff, "limit": batch}
        if db.dialect == "postgresql":
            selected, last, gone = db.rows(db.sql.cleanup_batch, params)[0]
        else:
            seqs = [r[0] for r in db.rows(db.sql.cleanup_batch, params)]
            selected, last, gone = len(seqs), max(seqs, default=None), len(seqs)
        deleted += int(gone)
        batches += 1
        done = int(selected) < batch
        yield CleanupProgress(deleted, batches, time.perf_counter() - start, _iso(cutoff), done)
        if done or last is None:
            return
        after = int(last)


# --------------------------------------------------------------------------------------------
# PostgreSQL: time-partitioned outbox (documented recipe; `outboxkit migrate` does not create it)


def partitioning_recipe(ref: TableRef) -> list[str]:
    """DDL for an outbox partitioned by day on ``created_at`` whose old days are dropped whole.

    Run it *before* ``outboxkit migrate``: migrate's ``CREATE TABLE IF NOT EXISTS`` then keeps
    this table and adds the indexes (as partitioned indexes), the meta and lease tables and the
    NOTIFY trigger. Then call ``SELECT * FROM <table>_partitions('7 days')`` daily (pg_cron,
    a Kubernetes CronJob): it creates the next days' partitions and drops the old days whose rows
    are all delivered.
    """
    t, name = ref.qualified, ref.table
    schema_stmt = [f'CREATE SCHEMA IF NOT EXISTS "{ref.schema}"'] if ref.schema else []
    return [
        *schema_stmt,
        f"""-- The columns of docs/schema.md. The primary key must contain the partition key, hence
-- (seq, created_at); seq stays unique because the identity sequence is shared by all partitions.
CREATE TABLE IF NOT EXISTS {t} (
    seq          bigint GENERATED ALWAYS AS IDENTITY,
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
    dead_at      timestamptz,
    PRIMARY KEY (seq, created_at)
) PARTITION BY RANGE (created_at)""",
        f"""-- Safety net: a row whose day has no partition yet lands here instead of failing the
-- writer's transaction. Keep it empty (create days ahead): a new partition must scan it.
CREATE TABLE IF NOT EXISTS {ref.derived("pdefault")} PARTITION OF {t} DEFAULT""",
        f"""-- Creates the partitions of today and the next `ahead` days (UTC), and drops each day older
-- than `keep` whose rows are all delivered: a day with a pending row or a dead letter is kept
-- (retry or discard the dead letters first). Returns what it did.
CREATE OR REPLACE FUNCTION {ref.derived("partitions")}(keep interval, ahead integer DEFAULT 3)
RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
    parent regclass := '{t}'::regclass;
    nsp    text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = parent);
    day    date;
    part   record;
    busy   boolean;
    -- Both partial indexes of `outboxkit migrate` answer this without reading the day's rows.
    busy_sql text := 'SELECT EXISTS (SELECT 1 FROM %I.%I WHERE delivered_at IS NULL AND dead_at IS NULL)'
                     ' OR EXISTS (SELECT 1 FROM %I.%I WHERE dead_at IS NOT NULL)';
BEGIN
    FOR i IN 0..ahead LOOP
        day := (now() AT TIME ZONE 'UTC')::date + i;
        IF to_regclass(format('%I.%I', nsp, '{name}_p' || to_char(day, 'YYYYMMDD'))) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                nsp, '{name}_p' || to_char(day, 'YYYYMMDD'), parent,
                day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            RETURN NEXT 'created ' || '{name}_p' || to_char(day, 'YYYYMMDD');
        END IF;
    END LOOP;
    -- Dropping a partition locks the parent; do not queue behind a long query (and block writers
    -- queued behind us): give up after 5 s and try again on the next run.
    PERFORM set_config('lock_timeout', '5s', true);
    FOR part IN
        SELECT c.relname, to_date(substr(c.relname, length('{name}_p') + 1), 'YYYYMMDD') AS day
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent AND c.relname ~ '^{name}_p[0-9]{{8}}$'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN ((part.day + 1)::timestamp AT TIME ZONE 'UTC') > now() - keep;
        EXECUTE format(busy_sql, nsp, part.relname, nsp, part.relname) INTO busy;
        IF NOT busy THEN
            -- Lock the parent first (the order the relay's statements take), then look again:
            -- nothing can replay or dead-letter a row of this day between the check and the drop.
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', parent);
            EXECUTE format(busy_sql, nsp, part.relname, nsp, part.relname) INTO busy;
        END IF;
        IF busy THEN
            RETURN NEXT 'kept ' || part.relname || ' (pending or dead rows)';
        ELSE
            EXECUTE format('DROP TABLE %I.%I', nsp, part.relname);
            RETURN NEXT 'dropped ' || part.relname;
        END IF;
    END LOOP;
END
$fn$""",
        f"SELECT * FROM {ref.derived('partitions')}('7 days')",
    ]
