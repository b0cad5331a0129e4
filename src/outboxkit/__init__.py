"""outboxkit: change the database and publish the event, atomically, without two-phase commit.

Write events with :func:`emit` inside your own transaction; run ``outboxkit relay`` to publish them.
"""

from outboxkit.emit import Outbox, emit, emit_async
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    EmitError,
    EncodingError,
    InvalidTopicError,
    NoTransactionError,
    OutboxkitError,
    PermanentError,
    SchemaError,
    TransientError,
    UnavailableError,
    UnroutableError,
)
from outboxkit.migrate import migrate, migration_sql

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DeliveryError",
    "EmitError",
    "EncodingError",
    "InvalidTopicError",
    "NoTransactionError",
    "Outbox",
    "OutboxkitError",
    "PermanentError",
    "SchemaError",
    "TransientError",
    "UnavailableError",
    "UnroutableError",
    "__version__",
    "emit",
    "emit_async",
    "migrate",
    "migration_sql",
]
