"""The one exception hierarchy of outboxkit.

Driver errors are translated at the adapter boundary; the relay decides on these types only::

    OutboxkitError
    ├── ConfigurationError          bad URL, option or file; raised at start-up
    ├── EmitError                   emit() refused; nothing was written
    │   ├── NoTransactionError      the connection has no open transaction
    │   ├── EncodingError           the payload cannot be encoded (or is too large)
    │   └── InvalidTopicError       the topic is not a valid routing name
    ├── ConcurrencyError            an event store append met another version of its stream
    ├── SchemaError                 the outbox table is missing or too old
    │   └── PositionLostError       the log a tailing relay must resume from was purged
    └── DeliveryError               a publish or a store operation failed
        ├── TransientError          worth retrying: connection lost, timeout, broker busy
        │   ├── UnavailableError    the service cannot be reached at all (outage)
        │   └── UnroutableError     no stream/queue takes this topic (yet); retried, reported
        └── PermanentError          retrying cannot help: dead-letter the event
"""

from __future__ import annotations


class OutboxkitError(Exception):
    """Base of every error outboxkit raises on purpose."""


class ConfigurationError(OutboxkitError):
    """Bad configuration: a URL, an option or a file. Raised at start-up, before any work."""


class EmitError(OutboxkitError):
    """``emit()`` refused the event. Nothing was written; the caller's transaction is untouched."""


class NoTransactionError(EmitError):
    """The connection given to ``emit()`` has no open transaction."""


class EncodingError(EmitError):
    """The payload cannot be encoded, or its encoding exceeds the configured size limit."""


class InvalidTopicError(EmitError):
    """The topic is not a valid routing name on every supported bus."""


class ConcurrencyError(OutboxkitError):
    """An append to an event stream expected another version than the stream has (optimistic
    concurrency): another writer appended first. Nothing was written; the caller's transaction is
    untouched, so it may reload the stream and decide again, or roll back."""

    def __init__(self, stream_id: str, expected: int | str, actual: int | None) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        have = "no stream" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream_id!r}: expected version {expected}, found {have}")


class SchemaError(OutboxkitError):
    """The outbox schema is missing or older than this version: run ``outboxkit migrate``."""


class PositionLostError(SchemaError):
    """The stored position of a log-tailing relay is no longer in the database's log (the binlog
    file or GTID it needs was purged): retrying cannot help; the documented recovery is to drain
    the outbox table and tail from the current position (``relay --capture binlog --resume-from-now``)."""


class DeliveryError(OutboxkitError):
    """A publish or store operation failed."""


class TransientError(DeliveryError):
    """Retrying later may succeed (lost connection, timeout, broker temporarily unable)."""


class UnavailableError(TransientError):
    """The database or broker cannot be reached at all."""


class UnroutableError(TransientError):
    """The broker has nowhere to put this topic (no stream captures the subject).

    Treated as transient because creating the stream fixes it, but reported as an error:
    such an event is never counted as delivered.
    """


class PermanentError(DeliveryError):
    """Retrying cannot help (message too large, rejected by the broker): dead-letter it."""
