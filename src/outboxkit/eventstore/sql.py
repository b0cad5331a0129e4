"""The event store's statements, written once over a database's event store SQL
(``stores/<database>/eventstore.py`` says what differs: placeholders, the readers' bound, DDL).

Identifiers come from a validated :class:`~outboxkit.stores.base.TableRef`; values are bound.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import PACKAGES, database_named


class Waiter(Protocol):
    def wait(self, timeout: float) -> bool:
        """Return when events may have committed (True), or after ``timeout`` seconds (False)."""
        ...

    def close(self) -> None: ...


class EventStoreSql(Protocol):
    """What a database package tells the event store (``<package>.eventstore.EVENT_STORE``)."""

    name: str
    placeholder: str
    now_sql: str
    headers_param: str
    #: An SQL expression: rows whose ``tx`` is below it have ended (committed or rolled back).
    visible_bound: str
    #: A statement taking the projection's lock for its transaction ("" when BEGIN does).
    projection_lock: str

    def waiter(self, url: str, ref: TableRef) -> Waiter:
        """What a projection runner sleeps on between batches: a wake-up, or plain polling."""
        ...

    def upgrade(self, url: str, ref: TableRef) -> list[str]:
        """Before ddl(): bring a table first created as a plain outbox up to an event store where
        ddl() alone cannot (SQLite); returns the columns added."""
        ...

    def ddl(self, ref: TableRef, *, notify: bool = True) -> list[str]:
        """The outbox DDL plus stream columns, the streams and projections tables; idempotent."""
        ...


def event_store_sql(dialect: str) -> EventStoreSql:
    """The event store SQL of a dialect name, URL scheme or SQLAlchemy dialect name."""
    name = database_named(dialect).name
    try:
        module = importlib.import_module(f"{PACKAGES[name]}.eventstore")
    except ModuleNotFoundError:
        from outboxkit.errors import ConfigurationError

        raise ConfigurationError(f"the event store does not support {name} yet") from None
    sql: EventStoreSql = module.EVENT_STORE
    return sql


#: Columns of a stored event, in RecordedEvent order (see plans.event_from_row).
EVENT_COLUMNS = "id, stream_id, version, type, payload, content_type, headers, created_at, tx, seq, topic"


@dataclass(frozen=True)
class Statements:
    """Every statement of the event store for one table on one database."""

    head_exact: str
    head_new: str
    head_any: str
    head_get: str
    insert: str
    read_forward: str
    read_backward: str
    read_all: str
    streams: str
    checkpoint_get: str
    checkpoint_put: str
    checkpoint_reset: str
    checkpoints: str
    backlog: str
    snapshot_get: str
    snapshot_put: str

    @classmethod
    def build(cls, db: EventStoreSql, ref: TableRef) -> Statements:
        p = db.placeholder
        t = ref.qualified
        heads = ref.derived("streams")
        projections = ref.derived("projections")
        snapshots = ref.derived("snapshots")
        return cls(
            # Exact version: move the head only from the version the writer read. A concurrent
            # writer of the same stream holds this row's lock until it ends; READ COMMITTED then
            # re-reads the row, finds another version and updates nothing: ConcurrencyError,
            # nothing written. Exactly one writer moves the head from each version.
            head_exact=f"UPDATE {heads} SET version = version + {p}, updated_at = {db.now_sql} "
            f"WHERE stream_id = {p} AND version = {p} RETURNING version",
            # No stream: the primary key admits one creator; the others wait for it, then do nothing.
            head_new=f"INSERT INTO {heads} (stream_id, version) VALUES ({p}, {p}) "
            "ON CONFLICT (stream_id) DO NOTHING RETURNING version",
            # Any version: create or move the head in one statement, under the same row lock.
            head_any=f"INSERT INTO {heads} AS h (stream_id, version) VALUES ({p}, {p}) "
            f"ON CONFLICT (stream_id) DO UPDATE SET version = h.version + excluded.version, "
            f"updated_at = {db.now_sql} RETURNING version",
            head_get=f"SELECT version FROM {heads} WHERE stream_id = {p}",
            insert=f"INSERT INTO {t} (id, topic, key, type, source, payload, content_type, headers, "
            f"stream_id, version) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {db.headers_param}, {p}, {p})",
            read_forward=f"SELECT {EVENT_COLUMNS} FROM {t} WHERE stream_id = {p} AND version >= {p} "
            f"ORDER BY version LIMIT {p}",
            read_backward=f"SELECT {EVENT_COLUMNS} FROM {t} WHERE stream_id = {p} AND version <= {p} "
            f"ORDER BY version DESC LIMIT {p}",
            # The global order, H1-safe: only rows of transactions that have ended (tx below the
            # bound), after the reader's position. A row of a transaction still open has tx at or
            # above the bound, so it is read later, at a position the reader has not passed.
            read_all=f"SELECT {EVENT_COLUMNS} FROM {t} WHERE stream_id IS NOT NULL "
            f"AND (tx, seq) > ({p}, {p}) AND tx < {db.visible_bound} ORDER BY tx, seq LIMIT {p}",
            streams=f"SELECT stream_id, version, created_at, updated_at FROM {heads} "
            f"WHERE stream_id > {p} ORDER BY stream_id LIMIT {p}",
            checkpoint_get=f"SELECT tx, seq, events FROM {projections} WHERE name = {p}",
            checkpoint_put=f"INSERT INTO {projections} AS c (name, tx, seq, events) VALUES ({p}, {p}, {p}, {p}) "
            f"ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, seq = excluded.seq, "
            f"events = c.events + excluded.events, updated_at = {db.now_sql}",
            checkpoint_reset=f"DELETE FROM {projections} WHERE name = {p}",
            checkpoints=f"SELECT name, tx, seq, events, updated_at FROM {projections} ORDER BY name",
            backlog=f"SELECT count(*) FROM {t} WHERE stream_id IS NOT NULL AND (tx, seq) > ({p}, {p})",
            snapshot_get=f"SELECT version, kind, state FROM {snapshots} WHERE stream_id = {p}",
            # Written in the appending transaction, so a snapshot never runs ahead of its events;
            # an older snapshot never replaces a newer one.
            snapshot_put=f"INSERT INTO {snapshots} AS s (stream_id, version, kind, state) VALUES ({p}, {p}, {p}, {p}) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, kind = excluded.kind, "
            f"state = excluded.state, created_at = {db.now_sql} WHERE s.version < excluded.version",
        )
