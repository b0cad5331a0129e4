"""A small orders service used by the demo, the fault tests and the lab.

Each transaction bumps a customer's counter by the number of events it emits and records every
event id in ``order_events`` next to the order, so the database itself is the ground truth: the
events that committed, and for each customer (the event key) the exact commit order ``n``.
Some transactions roll back on purpose; their ids are kept to recognise phantoms.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outboxkit.emit import Outbox
from outboxkit.errors import TransientError
from outboxkit.stores.base import TableRef, validate_identifier
from outboxkit.stores.database import Database, placeholders
from outboxkit.stores.registry import database_for, databases


@dataclass
class WriterStats:
    committed_tx: int = 0
    rolled_back_tx: int = 0
    committed_events: int = 0
    rolled_back_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class EventBudget:
    """Exactly ``total`` committed events across all writers: each transaction reserves its events
    before BEGIN (fewer when fewer are left) and gives them back if it rolls back.

    Stopping writers once the count is reached instead overshoots by the transactions already in
    flight (``outboxkit demo -n 1000`` committed 1,002). A writer that finds nothing left waits
    while reservations are in flight (a rollback may hand some back), then stops."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._in_flight = 0
        self._changed = threading.Condition()

    def take(self, want: int) -> int:
        """Reserve up to ``want`` events; 0 when the budget is spent (the writer stops)."""
        with self._changed:
            while self._left == 0 and self._in_flight:
                self._changed.wait()
            granted = min(want, self._left)
            self._left -= granted
            self._in_flight += granted
            return granted

    def settle(self, count: int, *, committed: bool) -> None:
        with self._changed:
            self._in_flight -= count
            if not committed:
                self._left += count
            self._changed.notify_all()


class OrdersWorkload:
    """Business tables + writers for one database URL (``sqlite:///...``, ``postgresql://...``,
    ``mysql://...``). The SQL is portable: no statement here depends on the database.

    ``schema`` isolates a run (a PostgreSQL schema, a MariaDB database; tests use a unique one and
    drop it after)."""

    def __init__(self, db: str, *, topic_prefix: str = "orders", keys: int = 100, schema: str | None = None) -> None:
        self.db = db
        self.database = database_for(db)
        self.dialect = self.database.name
        self.schema = validate_identifier(schema, "schema") if schema else None
        self.topic = f"{topic_prefix}.created"
        self.keys = [f"customer-{i:03d}" for i in range(keys)]
        self.outbox = Outbox(schema=self.schema, source="/outboxkit/demo/orders")
        self.stats = WriterStats()
        quote = self.database.quote
        q = f"{quote}{self.schema}{quote}." if self.schema else ""
        self._outbox = self.outbox.ref.quoted(quote)
        self._customers, self._orders, self._events = f"{q}customers", f"{q}orders", f"{q}order_events"

    @property
    def ref(self) -> TableRef:
        return self.outbox.ref

    def connect(self, label: str = "outboxkit-workload") -> Any:
        # Autocommit plus explicit BEGIN/COMMIT, so rolling back on purpose is one plain statement.
        return self.database.connect(self.db, label=label)

    def _p(self, sql: str) -> str:
        return placeholders(self.database, sql)

    def setup(self) -> None:
        conn = self.connect()
        try:
            if self.schema:
                self.database.create_namespace(conn, self.schema)
            # varchar(64), not text: MariaDB cannot index an unbounded text column.
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._customers} (id varchar(64) PRIMARY KEY, n integer NOT NULL)"
            )
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self._orders} (customer varchar(64) NOT NULL, amount integer)")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._events} (event_id varchar(64) PRIMARY KEY, customer varchar(64),"
                " n integer)"
            )
            known = {r[0] for r in conn.execute(f"SELECT id FROM {self._customers}").fetchall()}
            for key in self.keys:
                if key not in known:
                    conn.execute(self._p(f"INSERT INTO {self._customers} (id, n) VALUES (?, 0)"), (key,))
        finally:
            conn.close()

    def write(
        self,
        transactions: int,
        *,
        seed: int,
        rollback_ratio: float = 0.1,
        max_events: int = 3,
        on_commit: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
        survive_outages: bool = False,
        budget: EventBudget | None = None,
    ) -> None:
        """One writer: ``transactions`` transactions of 1..max_events events each; with ``budget``,
        writers sharing it stop once exactly its total of events committed.

        With ``survive_outages`` a lost connection (database restarted, connection killed) is
        reopened and the writer goes on; a transaction cut at COMMIT may or may not have committed,
        which is fine: the ground truth is read back from the database, not from the writer."""
        rng = random.Random(seed)
        conn = self.connect()
        try:
            for _ in range(transactions):
                if stop is not None and stop.is_set():
                    return
                if not survive_outages:
                    if not self._transaction(conn, rng, rollback_ratio, max_events, on_commit, budget):
                        return
                    continue
                try:
                    if not self._transaction(conn, rng, rollback_ratio, max_events, on_commit, budget):
                        return
                except Exception as exc:
                    if not is_connection_error(exc, self.database):
                        raise
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = self._reconnect(stop)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _reconnect(self, stop: threading.Event | None) -> Any:
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.connect()
            except Exception as exc:
                if not is_connection_error(exc, self.database) or time.monotonic() > deadline:
                    raise
                if stop is not None and stop.wait(0.1):
                    return self.connect()
                time.sleep(0.1)

    def _transaction(
        self,
        conn: Any,
        rng: random.Random,
        rollback_ratio: float,
        max_events: int,
        on_commit: Callable[[int], None] | None,
        budget: EventBudget | None = None,
    ) -> bool:
        """One transaction; False when ``budget`` is spent (nothing was written)."""
        key = rng.choice(self.keys)
        count = rng.randint(1, max_events)
        rollback = rng.random() < rollback_ratio
        if budget is not None:
            count = budget.take(count)
            if count == 0:
                return False
            committed = False
            try:
                committed = self._write(conn, rng, key, count, rollback, on_commit)
            finally:
                budget.settle(count, committed=committed)
            return True
        self._write(conn, rng, key, count, rollback, on_commit)
        return True

    def _write(
        self,
        conn: Any,
        rng: random.Random,
        key: str,
        count: int,
        rollback: bool,
        on_commit: Callable[[int], None] | None,
    ) -> bool:
        """Write the transaction; True when it committed."""
        ids: list[str] = []
        conn.execute(self.database.begin_sql)
        try:
            # The counter row is the business lock: same-key transactions serialise here,
            # so their outbox seqs and their commit order agree. (No UPDATE ... RETURNING: MariaDB
            # lacks it; reading the row back after our own UPDATE sees our value everywhere.)
            conn.execute(self._p(f"UPDATE {self._customers} SET n = n + ? WHERE id = ?"), (count, key))
            row = conn.execute(self._p(f"SELECT n FROM {self._customers} WHERE id = ?"), (key,)).fetchone()
            base = int(row[0]) - count
            conn.execute(
                self._p(f"INSERT INTO {self._orders} (customer, amount) VALUES (?, ?)"),
                (key, rng.randint(1, 500)),
            )
            for i in range(1, count + 1):
                n = base + i
                event_id = self.outbox.emit(
                    conn, self.topic, {"customer": key, "n": n, "amount": rng.randint(1, 500)}, key=key
                )
                ids.append(event_id)
                conn.execute(
                    self._p(f"INSERT INTO {self._events} (event_id, customer, n) VALUES (?, ?, ?)"),
                    (event_id, key, n),
                )
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        if rollback:
            conn.execute("ROLLBACK")
            with self.stats.lock:
                self.stats.rolled_back_tx += 1
                self.stats.rolled_back_ids.extend(ids)
            return False
        conn.execute("COMMIT")
        with self.stats.lock:
            self.stats.committed_tx += 1
            self.stats.committed_events += count
        if on_commit is not None:
            on_commit(count)
        return True

    def committed(self) -> dict[str, tuple[str | None, int | None]]:
        """Ground truth: event id -> (key, n) for every event whose transaction committed."""
        conn = self.connect()
        try:
            rows = conn.execute(f"SELECT event_id, customer, n FROM {self._events}").fetchall()
        finally:
            conn.close()
        return {str(r[0]): (r[1], r[2]) for r in rows}

    def drop(self) -> None:
        """Remove the business tables (and the schema on PostgreSQL)."""
        conn = self.connect()
        try:
            if self.schema:
                self.database.drop_namespace(conn, self.schema)
                return
            for t in (self._events, self._orders, self._customers):
                conn.execute(f"DROP TABLE IF EXISTS {t}")
        finally:
            conn.close()


def delivered_count(workload: OrdersWorkload) -> int:
    """Outbox rows the relay marked delivered (what it believes it published)."""
    conn = workload.connect()
    try:
        row = conn.execute(f"SELECT count(*) FROM {workload._outbox} WHERE delivered_at IS NOT NULL").fetchone()
    finally:
        conn.close()
    return int(row[0])


def is_connection_error(exc: BaseException, database: Database | None = None) -> bool:
    """Whether ``exc`` is what the database's own translation calls retryable (a lost connection,
    a busy SQLite file); without ``database``, what any database's translation calls so."""
    candidates = [database] if database is not None else list(databases())
    return any(isinstance(d.translate(exc, "workload"), TransientError) for d in candidates)
