"""Functions behind ``outboxkit status | dead-letters | replay | cleanup``, for every database.

The SQL lives with each database (``stores/<database>/ops.py``, an
:class:`~outboxkit.stores.ops.OpsDialect`): readable statements with bound parameters, identifiers
only from a validated :class:`~outboxkit.stores.base.TableRef`. This module never branches on a
dialect.
Connections are sync and in autocommit mode: each statement is its own short transaction, so an
operator command never holds locks across a prompt or between cleanup batches.

Three states of a row, as the relay sees them (docs/schema.md)::

    pending    delivered_at IS NULL AND dead_at IS NULL       the relay will publish it
    dead       dead_at IS NOT NULL                            a dead letter; holds its key (H5)
    delivered  delivered_at IS NOT NULL AND dead_at IS NULL   retained for replay until cleanup
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from outboxkit.core.workers import split_owner
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.ops import DISCARDED as DISCARDED  # re-exported for scripts
from outboxkit.stores.ops import OpsDialect
from outboxkit.stores.registry import database_for, database_named

#: A relay whose heartbeat is older than this is not counted as live.
LIVE_WINDOW_S = 15


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

    def params(self, dialect: OpsDialect) -> dict[str, Any]:
        return dialect.selector_params(_event_ids(self.ids), self.topic, self.key, self.since, self.until)


# --------------------------------------------------------------------------------------------
# Connections


class Db:
    """A sync, autocommit connection to the outbox's database, with its statements. Each statement
    is its own short transaction, so an operator command never holds locks across a prompt or
    between cleanup batches."""

    def __init__(self, dialect: OpsDialect, conn: SyncConnection, ref: TableRef, where: str) -> None:
        self.ops = dialect
        self.dialect: str = dialect.name
        self.ref = ref
        self.sql = dialect.statements(ref)
        self._conn = conn
        self._where = where

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self._execute(sql, params or {})
        return list(cur.fetchall()) if cur.description else []

    def run(self, sql: str, params: dict[str, Any] | None = None) -> int:
        """Execute; returns the number of rows changed."""
        return int(self._execute(sql, params or {}).rowcount)

    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        try:
            return self._conn.execute(sql, params)
        except Exception as exc:
            ours = database_named(self.dialect).translate(exc, f"{self.ref.qualified} at {self._where}")
            if ours is None:
                raise
            raise ours from None

    def columns(self) -> list[str]:
        """The outbox table's column names, lower case (one statement that reads no row)."""
        quoted = self.ref.quoted(database_named(self.dialect).quote)
        cur = self._execute(f"SELECT * FROM {quoted} WHERE 1 = 0", {})
        return [str(d[0]).lower() for d in cur.description or ()]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Db:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_db(url: str, ref: TableRef) -> Db:
    """Connect for operator work (labelled ``outboxkit-ops`` where the database shows labels)."""
    dialect = database_for(url).ops()
    conn, where = dialect.open(url, ref)
    return Db(dialect, conn, ref, where)


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
    held: int = 0  # pending rows behind a dead letter of their key: never sent while it stays


@dataclass(frozen=True)
class RelayStatus:
    owner: str
    heartbeat_age_s: float
    started_at: str
    info: dict[str, Any]
    buckets: list[int]
    # For a worker of ``outboxkit relay --workers N`` (owner ``host:pid:token/wI``): its
    # supervisor's name and its number; None for a relay started on its own.
    supervisor: str | None = None
    worker: int | None = None


@dataclass(frozen=True)
class Status:
    """What ``outboxkit status --json`` prints (keys documented in docs/operations.md)."""

    database: str
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


def plain_name(ref: TableRef) -> str:
    """``schema.table`` as a person writes it, with no database's quotes: what reports show (the
    quoted form differs per database: ``"outbox"`` on PostgreSQL, a backticked name on MariaDB)."""
    return f"{ref.schema}.{ref.table}" if ref.schema else ref.table


def status(db: Db) -> Status:
    held_by_topic = {str(r[0]): int(r[1]) for r in db.rows(db.sql.held_topics)} if db.sql.held_topics else {}
    topics = [
        TopicStatus(
            r[0], int(r[1]), _age(r[2]), int(r[3]), int(r[4]), int(r[5]), _age(r[6]), held_by_topic.get(str(r[0]), 0)
        )
        for r in db.rows(db.sql.topics)
    ]
    held = db.rows(db.sql.held)[0]
    base = Status(db.dialect, plain_name(db.ref), topics, int(held[0]), int(held[1] or 0), "single")
    view = db.ops.leases(db, db.ref, LIVE_WINDOW_S)
    if view is None:
        return base
    live = [
        RelayStatus(
            r.owner, r.heartbeat_age_s, _iso(r.started_at), r.info, r.buckets, *(split_owner(r.owner) or (None, None))
        )
        for r in view.live
    ]
    return Status(
        db.dialect,
        plain_name(db.ref),
        topics,
        base.dead_keys,
        base.held_pending,
        "leases",
        live,
        view.stale,
        view.total,
        view.held,
        view.free,
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
    params = selector.params(db.ops)
    total = int(db.rows(db.sql.dead_count, params)[0][0])
    rows = db.rows(db.sql.dead_list, {**params, "limit": limit})
    return total, [DeadLetter(r[0], str(r[1]), r[2], r[3], r[4], r[5], _iso(r[6]), _iso(r[7])) for r in rows]


def count_dead(db: Db, selector: Selector) -> int:
    return int(db.rows(db.sql.dead_count, selector.params(db.ops))[0][0])


def retry_dead(db: Db, selector: Selector) -> int:
    """Make matching dead letters pending again (attempts 0, last_error kept)."""
    _require_selection(selector)
    return db.run(db.sql.retry, selector.params(db.ops))


def discard_dead(db: Db, selector: Selector, *, delete: bool = False) -> int:
    """Give up on matching dead letters: mark them delivered with ``last_error`` prefixed
    ``discarded: `` (kept until cleanup, for the record), or delete them. Either way their keys
    are released."""
    _require_selection(selector)
    return db.run(db.sql.discard_delete if delete else db.sql.discard, selector.params(db.ops))


# --------------------------------------------------------------------------------------------
# replay


def count_replay(db: Db, selector: Selector) -> int:
    return int(db.rows(db.sql.replay_count, selector.params(db.ops))[0][0])


def replay(db: Db, selector: Selector) -> int:
    """Make matching delivered rows pending again; returns how many."""
    if selector.empty:
        raise ConfigurationError("replay needs a selector: --topic, --key, --id or --since")
    return db.run(db.sql.replay, selector.params(db.ops))


# --------------------------------------------------------------------------------------------
# activity (throughput and lag over time, from the delivered rows the table keeps)


@dataclass(frozen=True)
class ActivityPoint:
    """One time bucket of deliveries: starts at ``start`` (epoch seconds), ``step`` seconds long."""

    start: int
    delivered: int
    lag_mean_s: float
    lag_max_s: float


def activity(db: Db, window: timedelta, step: int) -> list[ActivityPoint]:
    """Rows the relays delivered in the last ``window``, per ``step``-second bucket, with their
    created->delivered lag. Built from ``delivered_at``, so it covers what cleanup has kept; rows
    replayed and not yet re-delivered are absent. Buckets without deliveries are absent too."""
    if step < 1 or window.total_seconds() < step:
        raise ConfigurationError("activity needs a step of at least 1 s and a window of at least one step")
    rows = db.rows(db.sql.activity, db.ops.activity_params(window, step))
    return [ActivityPoint(int(r[0]), int(r[1]), float(r[2] or 0.0), float(r[3] or 0.0)) for r in rows]


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
    return db.rows(db.sql.cutoff, db.ops.cutoff_params(keep))[0][0]


def refuse_event_store(db: Db) -> None:
    """Cleanup deletes delivered rows; in an event store's table (``migrate --event-store``, known by
    its ``stream_id`` column) every delivered row is history that aggregates and projections replay."""
    if "stream_id" in db.columns():
        raise ConfigurationError(
            f"{db.ref.qualified} is an event store (it has a stream_id column): cleanup would delete event"
            " history that aggregates and projections replay; it only runs on an outbox table"
        )


def count_cleanup(db: Db, keep: timedelta) -> int:
    refuse_event_store(db)
    return int(db.rows(db.sql.cleanup_count, {"cutoff": cleanup_cutoff(db, keep)})[0][0])


def cleanup(db: Db, keep: timedelta, batch: int = 10_000) -> Iterator[CleanupProgress]:
    """Delete delivered rows whose ``delivered_at`` is older than ``keep``, ``batch`` rows per
    transaction, yielding progress after each batch. Pending and dead rows are never deleted."""
    if batch < 1:
        raise ConfigurationError("--batch must be at least 1")
    refuse_event_store(db)
    cutoff = cleanup_cutoff(db, keep)
    after, deleted, batches, start = 0, 0, 0, time.perf_counter()
    while True:
        params = {"after": after, "cutoff": cutoff, "limit": batch}
        selected, last, gone = db.ops.cleanup_batch(db, db.sql, params)
        deleted += int(gone)
        batches += 1
        done = int(selected) < batch
        yield CleanupProgress(deleted, batches, time.perf_counter() - start, _iso(cutoff), done)
        if done or last is None:
            return
        after = int(last)


# --------------------------------------------------------------------------------------------
# partitioned outbox (a documented recipe where the database has one)


def partitioning_recipe(ref: TableRef, database: str = "postgresql") -> list[str]:
    """DDL for an outbox partitioned by day whose old days are dropped whole (PostgreSQL; see
    ``stores/postgres/partitions.py``). ``ConfigurationError`` for a database without a recipe."""
    recipe = database_named(database).ops().partitioning_recipe(ref)
    if recipe is None:
        raise ConfigurationError(f"partitioning is a PostgreSQL recipe; on {database} use the batched cleanup")
    return recipe
