"""Operating an outbox: status, dead letters, replay and retention, for PostgreSQL and SQLite.

:mod:`outboxkit.ops.queries` holds the SQL and plain functions (usable from your own scripts);
:mod:`outboxkit.ops.cli` the ``outboxkit`` commands built on them. See docs/operations.md.
"""

from __future__ import annotations

from outboxkit.ops.queries import (
    ActivityPoint,
    Db,
    DeadLetter,
    Selector,
    Status,
    activity,
    cleanup,
    discard_dead,
    list_dead,
    open_db,
    parse_duration,
    parse_time,
    partitioning_recipe,
    replay,
    retry_dead,
    status,
)

__all__ = [
    "ActivityPoint",
    "Db",
    "DeadLetter",
    "Selector",
    "Status",
    "activity",
    "cleanup",
    "discard_dead",
    "list_dead",
    "open_db",
    "parse_duration",
    "parse_time",
    "partitioning_recipe",
    "replay",
    "retry_dead",
    "status",
]
