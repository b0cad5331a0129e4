"""The operations role: the SQL behind ``outboxkit status | dead-letters | replay | cleanup``.

``outboxkit.ops`` holds the commands' logic once, for every database; each store package provides
an :class:`OpsDialect` with its statements (:class:`OpsStatements`, readable SQL with named, bound
parameters) and the few steps whose shape differs by database (cleanup batches, lease views).

Three states of a row, as the relay sees them (docs/schema.md)::

    pending    delivered_at IS NULL AND dead_at IS NULL       the relay will publish it
    dead       dead_at IS NOT NULL                            a dead letter; holds its key (H5)
    delivered  delivered_at IS NOT NULL AND dead_at IS NULL   retained for replay until cleanup
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from outboxkit.stores.base import SyncConnection, TableRef

#: Prefix of ``last_error`` on dead letters discarded by ``dead-letters discard`` (marked mode).
DISCARDED = "discarded: "


@dataclass(frozen=True)
class OpsStatements:
    """Every statement the operations need, for one outbox table. Parameters are named
    (``%(name)s`` or ``:name``, the driver's style) and always bound.

    Selector parameters: ``ids``, ``topic``, ``key``, ``since``, ``until`` (NULL / empty = no
    criterion), as :meth:`OpsDialect.selector_params` shapes them."""

    #: per topic: topic, pending, oldest pending age (s), dead, delivered, discarded, oldest delivered age (s)
    topics: str
    #: one row: keys with dead letters, pending rows held behind them
    held: str
    dead_count: str
    dead_list: str  # seq, id, topic, key, attempts, last_error, created_at, dead_at; + %(limit)s
    retry: str
    discard: str
    discard_delete: str
    replay_count: str
    replay: str
    cutoff: str  # one value: the database's now() minus the ``keep`` parameter
    cleanup_count: str
    cleanup_batch: str
    #: a second statement for databases whose batch is a SELECT then a DELETE (MariaDB/MySQL)
    cleanup_delete: str = ""
    #: delivered rows (not discarded) of the last ``window`` seconds, grouped in ``step``-second
    #: buckets: bucket start (epoch s), rows, mean and max created->delivered seconds. Feeds the
    #: dashboard's throughput and lag charts from the rows the table keeps until cleanup.
    activity: str = ""
    #: per topic with any: topic, pending rows held behind a dead letter of their key
    held_topics: str = ""


@dataclass(frozen=True)
class LiveRelay:
    owner: str
    heartbeat_age_s: float
    started_at: Any
    info: dict[str, Any]
    buckets: list[int]


@dataclass(frozen=True)
class LeaseView:
    """Relays and bucket leases, for a database that shares the outbox between relays."""

    live: list[LiveRelay]
    stale: int
    total: int
    held: int
    free: list[int]


class OpsRunner(Protocol):
    """What the operations layer hands a dialect: run a statement on its connection."""

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: dict[str, Any] | None = None) -> int: ...


class OpsDialect(Protocol):
    """One database's side of the operator commands."""

    name: str

    def open(self, url: str, ref: TableRef) -> tuple[SyncConnection, str]:
        """A sync autocommit connection for operator work, and where it points (password redacted).
        Raises ``SchemaError`` when the database (file) does not exist."""
        ...

    def statements(self, ref: TableRef) -> OpsStatements: ...

    def selector_params(
        self, ids: Sequence[str], topic: str | None, key: str | None, since: datetime | None, until: datetime | None
    ) -> dict[str, Any]:
        """The selector's parameters in the form :meth:`statements` binds them."""
        ...

    def cutoff_params(self, keep: timedelta) -> dict[str, Any]:
        """Parameters of ``statements.cutoff`` for keeping ``keep``."""
        ...

    def activity_params(self, window: timedelta, step: int) -> dict[str, Any]:
        """Parameters of ``statements.activity``: the last ``window``, in ``step``-second buckets."""
        ...

    def cleanup_batch(self, db: OpsRunner, sql: OpsStatements, params: dict[str, Any]) -> tuple[int, int | None, int]:
        """Run one cleanup batch (``sql.cleanup_batch``, and ``sql.cleanup_delete`` where used):
        (rows selected, highest seq selected, rows deleted)."""
        ...

    def leases(self, db: OpsRunner, ref: TableRef, live_window_s: float) -> LeaseView | None:
        """Relays and leases, or None when this database runs a single relay (no lease table)."""
        ...

    def partitioning_recipe(self, ref: TableRef) -> list[str] | None:
        """DDL for a partitioned outbox whose old partitions are dropped whole, where the database
        has such a recipe (PostgreSQL), else None."""
        ...
