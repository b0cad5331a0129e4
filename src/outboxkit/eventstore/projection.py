"""Projections and catch-up subscriptions: read every stream's events in the global order, apply
them in the projection's own transaction, and store the checkpoint in that same transaction.

Exactly-once projection: the handler's writes and the new checkpoint commit together or not at
all, so a crash at any point replays only events whose effects were rolled back. The global order
never skips a late commit (H1: see ``EventStore.read_all``). One batch of a projection runs at a
time (a lock per projection name), so two runners of one projection cannot both apply an event.

A runner tails live: after a short batch it sleeps on the database's wake-up (LISTEN/NOTIFY on
PostgreSQL) or polls (SQLite), and a rebuild clears the projection and starts again from the
first event.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from outboxkit.eventstore import plans
from outboxkit.eventstore.connection import run_sync, sync_runner
from outboxkit.eventstore.model import Position, RecordedEvent
from outboxkit.eventstore.sql import Waiter, event_store_sql
from outboxkit.eventstore.store import EventStore
from outboxkit.stores.base import SyncConnection
from outboxkit.stores.registry import database_for

log = logging.getLogger("outboxkit.projection")


class Projection(Protocol):
    """A read model built from events. ``handle`` and ``reset`` run inside the runner's
    transaction on ``conn`` (autocommit psycopg or sqlite3): write with it, never commit."""

    name: str

    def handle(self, conn: Any, event: RecordedEvent) -> None:
        """Apply one event. Raising rolls back the whole batch and stops the runner."""
        ...

    def reset(self, conn: Any) -> None:
        """Forget everything (a rebuild follows)."""
        ...


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: Position
    events: int
    updated_at: datetime | str | None
    backlog: int


class ProjectionRunner:
    """Runs one projection against the event store at ``url`` on a connection of its own."""

    def __init__(
        self, store: EventStore, projection: Projection, url: str, *, batch: int = 500, poll_interval: float = 0.5
    ) -> None:
        if not isinstance(projection.name, str) or not projection.name or len(projection.name) > 200:
            raise ValueError("a projection's name must be a non-empty str of at most 200 characters")
        if batch < 1 or poll_interval <= 0:
            raise ValueError("batch must be >= 1 and poll_interval > 0")
        self.store = store
        self.projection = projection
        self.url = url
        self.batch = batch
        self.poll_interval = poll_interval
        self.database = database_for(url)
        self.sql = event_store_sql(self.database.name)
        self.statements = store.statements(self.database.name)
        self._conn: SyncConnection | None = None

    @property
    def conn(self) -> SyncConnection:
        if self._conn is None:
            self._conn = self.database.connect(self.url, label=f"outboxkit-projection-{self.projection.name}")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _begin(self) -> Any:
        conn = self.conn
        conn.execute(self.database.begin_sql)
        if self.sql.projection_lock:
            conn.execute(self.sql.projection_lock, ["projection:" + self.projection.name])
        return conn

    def run_once(self) -> int:
        """One batch in one transaction: read after the checkpoint, handle, move the checkpoint;
        returns the number of events handled."""
        conn = self._begin()
        try:
            _, run = sync_runner(conn, write=False)
            st = self.statements
            found = run(plans.Query(st.checkpoint_get, (self.projection.name,)))
            after = Position(int(found[0][0]), int(found[0][1])) if found else Position()
            events = run_sync(plans.read(st.read_all, (after.tx, after.seq, self.batch)), run)
            for event in events:
                self.projection.handle(conn, event)
            if events:
                last = events[-1].position
                run(plans.Query(st.checkpoint_put, (self.projection.name, last.tx, last.seq, len(events))))
            conn.execute("COMMIT")
            return len(events)
        except BaseException:
            self._rollback()
            raise

    def catch_up(self) -> int:
        """Run batches until one comes back short; returns the events handled."""
        total = 0
        while True:
            n = self.run_once()
            total += n
            if n < self.batch:
                return total

    def run(self, stop: threading.Event | None = None) -> None:
        """Catch up, then tail: sleep on the wake-up between batches until ``stop`` is set."""
        stop = stop or threading.Event()
        waiter = self.sql.waiter(self.url, self.store.ref)
        backoff = 0.0
        try:
            while not stop.is_set():
                handled = self.run_once()
                if handled >= self.batch:
                    continue
                if backoff:
                    # Woken, but the events may still sit above the readers' bound (H1: an older
                    # transaction is open): look again soon, backing off up to the poll interval.
                    stop.wait(backoff)
                    backoff = 0.0 if handled or backoff * 2 > self.poll_interval else backoff * 2
                    continue
                if self._sleep(waiter, stop):
                    backoff = 0.05
        finally:
            waiter.close()

    def _sleep(self, waiter: Waiter, stop: threading.Event) -> bool:
        """Wait for a wake-up up to the poll interval, in slices so that ``stop`` is seen within a
        second; True if woken."""
        deadline = time.monotonic() + self.poll_interval
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if waiter.wait(min(left, 1.0)):
                return True
        return False

    def rebuild(self) -> int:
        """Reset the projection and its checkpoint in one transaction, then catch up from the
        first event; returns the events handled."""
        conn = self._begin()
        try:
            self.projection.reset(conn)
            conn.execute(self.statements.checkpoint_reset, [self.projection.name])
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return self.catch_up()

    def _rollback(self) -> None:
        try:
            if self._conn is not None:
                self._conn.execute("ROLLBACK")
        except Exception:  # the connection is gone; a new one is made next time
            self.close()


def projection_statuses(store: EventStore, url: str) -> list[ProjectionStatus]:
    """Every projection's checkpoint in the store at ``url``, with its backlog (events after it)."""
    database = database_for(url)
    st = store.statements(database.name)
    conn = database.connect(url, label="outboxkit-projections")
    try:
        _, run = sync_runner(conn, write=False)
        out = []
        for name, tx, seq, events, updated_at in run(plans.Query(st.checkpoints, ())):
            backlog = run(plans.Query(st.backlog, (tx, seq)))[0][0]
            out.append(ProjectionStatus(name, Position(int(tx), int(seq)), int(events), updated_at, int(backlog)))
        return out
    finally:
        conn.close()
