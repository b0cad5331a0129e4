"""Event sourcing on the outbox: an event store whose events the relay publishes as they are.

Append events to streams with optimistic concurrency in your own transaction
(:class:`EventStore`), rebuild aggregates from them, and run projections that read every stream in
an order that never skips a late commit. See ``docs/event-sourcing.md``.
"""

from outboxkit.errors import ConcurrencyError
from outboxkit.eventstore.aggregate import Aggregate, EventTypes, Repository, UnknownEventError
from outboxkit.eventstore.migrate import event_store_sql_text, migrate_event_store
from outboxkit.eventstore.model import ANY, NO_STREAM, AppendResult, Expected, NewEvent, Position, RecordedEvent
from outboxkit.eventstore.projection import Projection, ProjectionRunner, ProjectionStatus, projection_statuses
from outboxkit.eventstore.store import EventStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "Aggregate",
    "AppendResult",
    "ConcurrencyError",
    "EventStore",
    "EventTypes",
    "Expected",
    "NewEvent",
    "Position",
    "Projection",
    "ProjectionRunner",
    "ProjectionStatus",
    "RecordedEvent",
    "Repository",
    "UnknownEventError",
    "event_store_sql_text",
    "migrate_event_store",
    "projection_statuses",
]
