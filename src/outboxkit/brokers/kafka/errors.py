"""Kafka error translation (H12): librdkafka's error codes and the client's own exceptions.

Every row is listed in docs/exceptions.md and exercised by tests/unit/test_broker_classification.py.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from outboxkit.brokers._errors import Outage, timed_out, unexpected
from outboxkit.errors import DeliveryError, PermanentError, TransientError, UnavailableError, UnroutableError

E = KafkaError


#: librdkafka error codes (a delivery report's, a KafkaException's) -> class. A code not listed is a
#: counted ``TransientError``; a *fatal* error (``err.fatal()``) is ``UnavailableError`` whatever its
#: code: the producer can never send again and is replaced (see :meth:`KafkaPublisher._on_error`).
CODES: dict[int, type[DeliveryError]] = {
    # Refused for good: the message (or its topic name) is invalid for this cluster.
    E.MSG_SIZE_TOO_LARGE: PermanentError,
    E.INVALID_MSG_SIZE: PermanentError,
    E.RECORD_LIST_TOO_LARGE: PermanentError,
    E.INVALID_RECORD: PermanentError,
    E.INVALID_MSG: PermanentError,
    E._BAD_MSG: PermanentError,
    E._INVALID_ARG: PermanentError,
    E._KEY_SERIALIZATION: PermanentError,
    E._VALUE_SERIALIZATION: PermanentError,
    E.TOPIC_EXCEPTION: PermanentError,  # an invalid topic name
    E.POLICY_VIOLATION: PermanentError,
    E.UNSUPPORTED_FOR_MESSAGE_FORMAT: PermanentError,  # headers on a pre-0.11 message format
    # Nothing takes the topic: it does not exist (and is not auto-created), or ACLs deny it.
    E.UNKNOWN_TOPIC_OR_PART: UnroutableError,
    E._UNKNOWN_TOPIC: UnroutableError,
    E._UNKNOWN_PARTITION: UnroutableError,
    E.UNKNOWN_TOPIC_ID: UnroutableError,
    E.TOPIC_AUTHORIZATION_FAILED: UnroutableError,
    # No broker can be reached, or this producer cannot send any more (it is replaced).
    E._TRANSPORT: UnavailableError,
    E._ALL_BROKERS_DOWN: UnavailableError,
    E._RESOLVE: UnavailableError,
    E._SSL: UnavailableError,
    E._AUTHENTICATION: UnavailableError,
    E.SASL_AUTHENTICATION_FAILED: UnavailableError,
    E.CLUSTER_AUTHORIZATION_FAILED: UnavailableError,  # the idempotent producer needs IdempotentWrite
    E._FATAL: UnavailableError,
    E._DESTROY: UnavailableError,
    E._DESTROY_BROKER: UnavailableError,
    E._PURGE_QUEUE: UnavailableError,  # purged because the producer was replaced or closed
    E._PURGE_INFLIGHT: UnavailableError,
    E.PRODUCER_FENCED: UnavailableError,
    E.INVALID_PRODUCER_EPOCH: UnavailableError,
    E.INVALID_PRODUCER_ID_MAPPING: UnavailableError,
    E.OUT_OF_ORDER_SEQUENCE_NUMBER: UnavailableError,
    # Per event, a retry may fix it (counted). _MSG_TIMED_OUT is UnavailableError during an outage.
    E._MSG_TIMED_OUT: TransientError,
    E._TIMED_OUT: TransientError,
    E._TIMED_OUT_QUEUE: TransientError,
    E._QUEUE_FULL: TransientError,
    E._INVALID_DIFFERENT_RECORD: TransientError,  # a neighbour in the batch was invalid, not this one
    E._ISR_INSUFF: TransientError,
    E.REQUEST_TIMED_OUT: TransientError,
    E.NOT_ENOUGH_REPLICAS: TransientError,
    E.NOT_ENOUGH_REPLICAS_AFTER_APPEND: TransientError,
    E.LEADER_NOT_AVAILABLE: TransientError,
    E.NOT_LEADER_FOR_PARTITION: TransientError,
    E.BROKER_NOT_AVAILABLE: TransientError,
    E.NETWORK_EXCEPTION: TransientError,
    E.KAFKA_STORAGE_ERROR: TransientError,
    E.THROTTLING_QUOTA_EXCEEDED: TransientError,
    E.INVALID_TIMESTAMP: TransientError,  # our timestamps are "now": a skewed clock, not the event
    E.UNKNOWN_PRODUCER_ID: TransientError,  # librdkafka bumps the epoch itself; see _check_stuck
}


#: codes librdkafka reports while no broker can be reached: an outage starts
_OUTAGE = {E._TRANSPORT, E._ALL_BROKERS_DOWN, E._RESOLVE}


#: a producer whose delivery reports carry these must be replaced (idempotence state is broken)
_REBUILD = {
    code
    for code, kind in CODES.items()
    if kind is UnavailableError and code not in _OUTAGE and code not in (E._PURGE_QUEUE, E._PURGE_INFLIGHT)
}


def translate(err: KafkaError | BaseException, topic: str = "?", outage: Outage | None = None) -> DeliveryError:
    """A librdkafka error (a delivery report's or an exception's) as an outboxkit error (:data:`CODES`)."""
    if isinstance(err, DeliveryError):
        return err
    if isinstance(err, KafkaException) and err.args and isinstance(err.args[0], KafkaError):
        err = err.args[0]
    if isinstance(err, BufferError):
        return TransientError(f"Kafka producer queue is full: {err}")
    if isinstance(err, RuntimeError) and "closed" in str(err):
        return UnavailableError(f"Kafka client is closed: {err}")
    if not isinstance(err, KafkaError):
        return unexpected(err, f"Kafka call for topic {topic!r}")
    code, reason = err.code(), f"{err.str()} ({err.name()})"
    kind = UnavailableError if err.fatal() else CODES.get(code, TransientError)
    if code == E._MSG_TIMED_OUT:
        return timed_out(outage, f"Kafka did not confirm in time: {reason}") if outage else TransientError(reason)
    if kind is PermanentError:
        return PermanentError(f"Kafka refused the message: {reason}")
    if kind is UnroutableError:
        return UnroutableError(f"Kafka topic {topic!r} is not available: {reason}; create it with `outboxkit provision --broker URL --topic {topic}`")  # noqa: E501  # fmt: skip
    if kind is UnavailableError:
        return UnavailableError(f"Kafka cannot deliver now: {reason}")
    return TransientError(f"Kafka publish failed: {reason}")


def _consumer_error(exc: Exception) -> DeliveryError:
    """A consumer call's exception: the client cannot go on (outage, fatal, closed) -> Unavailable
    (the runner builds a new consumer); a failed commit or anything else -> Transient (retried)."""
    error = translate(exc)
    if isinstance(error, UnavailableError):
        return UnavailableError(f"Kafka consumer: {error}")
    return TransientError(f"Kafka consumer: {error}")
