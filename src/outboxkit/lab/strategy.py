"""The Strategy role: how one approach writes a business change and gets its event onto the bus.

The runner knows nothing about any strategy beyond this Protocol. A strategy says what the database
needs (``prepare``), which background process delivers for it, if any (``companion``: a relay, later a
log tailer), how much is still waiting for that process (``backlog``), and, inside the writer
subprocess, how to recover at start-up (``recover``) and how to run one business transaction
(``write``). Trigger capture, log tailing and event sourcing join by adding a class, not by changing
the runner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from outboxkit.core.envelope import OutboxEvent
from outboxkit.emit import Outbox
from outboxkit.lab.faults import Txn
from outboxkit.stores.base import TableRef
from outboxkit.stores.database import Database
from outboxkit.stores.registry import database_for

#: Where ``outboxkit lab run`` works unless told otherwise (each strategy in a schema of its own).
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Env:
    """Where a strategy run lives: database, outbox, topic and the instance's local directory."""

    db: str
    schema: str | None
    broker: str
    topic: str
    instance_dir: str  # files the service keeps locally; deleted when the instance is lost

    @property
    def database(self) -> Database:
        return database_for(self.db)

    @property
    def dialect(self) -> str:
        return self.database.name

    @property
    def ref(self) -> TableRef:
        return TableRef("outbox", self.schema)

    @property
    def outbox(self) -> str:
        """The outbox table, quoted for this database."""
        return self.ref.quoted(self.database.quote)

    def table(self, name: str) -> str:
        q = self.database.quote
        return f"{q}{self.schema}{q}.{name}" if self.schema else name


class WriteContext(Protocol):
    """What the writer subprocess gives a strategy for one transaction."""

    env: Env
    conn: Any  # the main database, autocommit, explicit BEGIN/COMMIT
    outbox: Outbox

    def sql(self, text: str) -> str:
        """``?`` placeholders in the database's own style."""
        ...

    async def at(self, point: str) -> None:
        """A crash point (see ``faults``): may SIGKILL the process here, or wait for a fault to happen."""
        ...

    def committed(self, txn: Txn, ids: Sequence[str]) -> None:
        """Record the commit time of ``ids`` (for latency); call right after COMMIT returned."""
        ...

    async def publish(self, events: Sequence[OutboxEvent]) -> bool:
        """Publish and wait for every broker confirmation; False if any failed (logged, not raised)."""
        ...

    def reconnect(self) -> None:
        """Replace ``conn`` after the database dropped it."""
        ...


class Strategy(Protocol):
    name: str
    summary: str
    choose: str  # the end of "choose it ...": when this approach is the right one

    def prepare(self, env: Env) -> None:
        """Create what the strategy needs in the database (outbox table, triggers, ...). Idempotent."""
        ...

    def companion(self, env: Env) -> list[str] | None:
        """argv of the background delivery process (relay, log tailer), or None when the writer delivers."""
        ...

    def backlog(self, env: Env) -> int:
        """Committed events the companion has not delivered yet (0 without a companion)."""
        ...

    async def recover(self, ctx: WriteContext) -> None:
        """Run when the writer starts and before it stops: finish what a crash left undone."""
        ...

    async def write(self, ctx: WriteContext, txn: Txn) -> None:
        """One business transaction and its events, passing the crash points it has."""
        ...

    def identify(self, headers: Mapping[str, str], data: bytes) -> tuple[str, int | None]:
        """Which committed event a received message is (its id in ``order_events``) and the
        planned transaction that sent it, if the payload says."""
        ...


def identify_by_envelope(headers: Mapping[str, str], data: bytes) -> tuple[str, int | None]:
    """The message's own id (``ce-id``), and ``tx`` from the payload the lab writers send."""
    try:
        tx = int(json.loads(data)["tx"])
    except (ValueError, KeyError, TypeError):
        tx = None
    return headers.get("ce-id") or headers.get("Nats-Msg-Id", ""), tx


def payload(txn: Txn, i: int) -> dict[str, Any]:
    return {"customer": txn.key, "tx": txn.index, "i": i, "at": time.time()}


def event(env: Env, event_id: str, txn: Txn, body: bytes) -> OutboxEvent:
    return OutboxEvent(seq=0, id=event_id, topic=env.topic, payload=body, key=txn.key)


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def business(ctx: WriteContext, txn: Txn, ids: Sequence[str]) -> None:
    """The orders change itself, inside the caller's open transaction.

    ``order_events`` is the ground truth: it commits exactly when the business change does, and
    ``n`` numbers each customer's events in commit order. The customer row is the business lock,
    so same-key transactions serialise and their ``n`` agrees with commit order."""
    env = ctx.env
    ctx.conn.execute(ctx.sql(f"UPDATE {env.table('customers')} SET n = n + ? WHERE id = ?"), (len(ids), txn.key))
    row = ctx.conn.execute(ctx.sql(f"SELECT n FROM {env.table('customers')} WHERE id = ?"), (txn.key,)).fetchone()
    base = int(row[0]) - len(ids)
    ctx.conn.execute(ctx.sql(f"INSERT INTO {env.table('orders')} (customer, amount) VALUES (?, ?)"), (txn.key, 1))
    for i, event_id in enumerate(ids, start=1):
        ctx.conn.execute(
            ctx.sql(f"INSERT INTO {env.table('order_events')} (event_id, customer, n) VALUES (?, ?, ?)"),
            (event_id, txn.key, base + i),
        )


def local_dir(env: Env) -> Path:
    path = Path(env.instance_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path
