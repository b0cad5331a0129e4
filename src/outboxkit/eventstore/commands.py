"""What the ``outboxkit`` event store commands do (``migrate --event-store``, ``streams``,
``projections``): the CLI parses arguments and calls these."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from outboxkit.errors import ConfigurationError, OutboxkitError, SchemaError
from outboxkit.eventstore import plans
from outboxkit.eventstore.connection import sync_runner
from outboxkit.eventstore.migrate import DEFAULT_TABLE, event_store_sql_text, migrate_event_store
from outboxkit.eventstore.projection import Projection, ProjectionRunner, projection_statuses
from outboxkit.eventstore.store import EventStore
from outboxkit.imports import load_object
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for

Echo = Callable[[str], object]


def migrate_command(
    db: str | None, table: str | None, schema: str | None, *, sql: bool, dialect: str | None, notify: bool, echo: Echo
) -> str | None:
    """Print the DDL (``--sql``) or run it; returns the line to show after a migration."""
    ref = TableRef(table or DEFAULT_TABLE, schema)
    if sql:
        target = db or dialect
        if not target:
            raise ConfigurationError("--sql needs --db URL or --dialect NAME")
        for stmt in event_store_sql_text(target, ref, notify=notify):
            echo(stmt.rstrip() + ";\n")
        return None
    if not db:
        raise ConfigurationError("no database: pass --db URL or set OUTBOXKIT_DB")
    count = migrate_event_store(db, ref, notify=notify)
    return f"migrated event store {ref.qualified}: {count} statements, schema is up to date"


def _store(table: str | None, schema: str | None) -> EventStore:
    return EventStore(table=table or DEFAULT_TABLE, schema=schema)


@contextlib.contextmanager
def _translated(db: str, store: EventStore) -> Iterator[None]:
    """Driver errors as the database classes them, in one line; a missing table names the fix."""
    try:
        yield
    except OutboxkitError:
        raise
    except Exception as exc:
        translated = database_for(db).translate(exc, store.ref.qualified)
        if isinstance(translated, SchemaError):
            raise SchemaError(
                f"no event store {store.ref.qualified} (or it is older than this version): "
                "run `outboxkit migrate --event-store`"
            ) from None
        if translated is None:
            raise
        raise translated from None


def streams_list(db: str, table: str | None, schema: str | None, *, after: str, limit: int) -> list[str]:
    """``outboxkit streams list``: one line per stream (id, version, last append)."""
    store = _store(table, schema)
    database = database_for(db)
    with _translated(db, store):
        conn = database.connect(db, label="outboxkit-streams")
        try:
            _, run = sync_runner(conn, write=False)
            rows = run(plans.Query(store.statements(database.name).streams, (after, limit)))
        finally:
            conn.close()
    width = max([len("STREAM"), *(len(r[0]) for r in rows)])
    lines = [f"{'STREAM':<{width}}  {'VERSION':>8}  UPDATED"]
    lines += [f"{r[0]:<{width}}  {r[1]:>8}  {_when(r[3])}" for r in rows]
    return lines


def streams_show(
    db: str, table: str | None, schema: str | None, stream_id: str, *, start: int | None, limit: int | None
) -> list[str]:
    """``outboxkit streams show STREAM``: the stream's events, one line each."""
    store = _store(table, schema)
    with _translated(db, store):
        conn = database_for(db).connect(db, label="outboxkit-streams")
        try:
            events = store.read_stream(conn, stream_id, start=start, limit=limit)
            version = store.stream_version(conn, stream_id)
        finally:
            conn.close()
    if not events and version == 0:
        raise ConfigurationError(f"no stream {stream_id!r} in {store.ref.qualified}")
    lines = [f"stream {stream_id}: version {version}"]
    for e in events:
        data = e.data.decode("utf-8", "replace")
        data = data if len(data) <= 120 else data[:117] + "..."
        lines.append(f"{e.version:>6}  {_when(e.created_at)}  {e.type}  {e.id}  {data}")
    return lines


def projections_status(db: str, table: str | None, schema: str | None) -> list[str]:
    """``outboxkit projections status``: each projection's checkpoint and backlog."""
    store = _store(table, schema)
    with _translated(db, store):
        statuses = projection_statuses(store, db)
    if not statuses:
        return ["no projections have run against this event store"]
    width = max(len("PROJECTION"), *(len(s.name) for s in statuses))
    lines = [f"{'PROJECTION':<{width}}  {'EVENTS':>10}  {'BACKLOG':>8}  POSITION  UPDATED"]
    for s in statuses:
        where = f"{s.position.tx}:{s.position.seq}"
        lines.append(f"{s.name:<{width}}  {s.events:>10}  {s.backlog:>8}  {where}  {_when(s.updated_at)}")
    return lines


def projections_rebuild(db: str, table: str | None, schema: str | None, target: str) -> str:
    """``outboxkit projections rebuild --projection module:attr``: reset and replay from the start."""
    projection = load_projection(target)
    store = _store(table, schema)
    runner = ProjectionRunner(store, projection, db)
    with _translated(db, store):
        try:
            count = runner.rebuild()
        finally:
            runner.close()
    return f"rebuilt projection {projection.name!r}: {count} events"


def load_projection(target: str) -> Projection:
    """``package.module:attr``: a Projection, or a callable with no arguments that returns one."""
    # Imported like every module:attr option: from the current directory first (outboxkit.imports).
    found: Any = load_object(target, option="--projection", what="projection")
    projection = found() if callable(found) and not hasattr(found, "handle") else found
    if not all(hasattr(projection, a) for a in ("name", "handle", "reset")):
        raise ConfigurationError(f"{target!r} is not a projection (it needs name, handle() and reset())")
    result: Projection = projection
    return result


def _when(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "-")[:19].replace("T", " ")
