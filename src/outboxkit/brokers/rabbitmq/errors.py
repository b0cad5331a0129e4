"""RabbitMQ error translation (H12): the publish path's and the consumer's tables.

Every row is listed in docs/exceptions.md and exercised by tests/unit/test_broker_classification.py.
"""

from __future__ import annotations

import re

import aiormq
import aiormq.abc
import aiormq.exceptions

from outboxkit.brokers._errors import Outage, Row, classify, unexpected
from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import DeliveryError, PermanentError, TransientError, UnavailableError, UnroutableError

# RabbitMQ closes the channel with: PRECONDITION_FAILED - message size 2000000 is larger than
# configured max size 1048576
_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")


#: Exceptions of the publish path, most specific first (aiormq's, re-exported by aio-pika). A channel
#: error closes the channel for every publish in flight on it, so most channel rows are transient:
#: only the publish that caused it knows it is the culprit (the oversized one, see :func:`translate`).
PUBLISH_ERRORS: tuple[Row, ...] = (
    # basic.return of a mandatory publish: no queue is bound for the routing key (H8).
    (aiormq.exceptions.PublishError, UnroutableError),
    # basic.nack: the broker did not take it (a full queue with overflow=reject-publish, an internal error).
    (aiormq.exceptions.DeliveryError, TransientError),
    # Channel closed by the broker: 404 the exchange is gone (deleted under us; the robust channel
    # declares it again), 403 this user may not write to it.
    (aiormq.exceptions.ChannelNotFoundEntity, UnroutableError),
    (aiormq.exceptions.ChannelAccessRefused, UnroutableError),
    (aiormq.exceptions.ChannelPreconditionFailed, TransientError),  # 406, but see _TOO_LARGE
    (aiormq.exceptions.ChannelLockedResource, TransientError),  # 405
    (aiormq.exceptions.ChannelClosed, TransientError),  # any other reply code
    (aiormq.exceptions.ChannelInvalidStateError, TransientError),  # the channel closed under the publish
    # The connection is gone (320 CONNECTION_FORCED, 530 NOT_ALLOWED, a reset socket, ...): the robust
    # connection reconnects in the background.
    (aiormq.exceptions.AMQPConnectionError, UnavailableError),
    (ConnectionError, UnavailableError),
    # aiormq refuses a routing key over 255 bytes before sending: the topic is invalid on AMQP.
    (ValueError, PermanentError),
)


#: Consumer calls: a lost connection or channel makes the runner reconnect; the rest is retried.
CONSUMER_ERRORS: tuple[Row, ...] = (
    (aiormq.exceptions.AMQPConnectionError, UnavailableError),
    (ConnectionError, UnavailableError),
    (aiormq.exceptions.ChannelInvalidStateError, UnavailableError),
    (aiormq.exceptions.AMQPError, TransientError),
)


def translate(exc: BaseException, event: OutboxEvent, outage: Outage | None = None) -> DeliveryError:
    """A driver error -> an outboxkit error (:data:`PUBLISH_ERRORS`), keeping the broker's reason."""
    if isinstance(exc, DeliveryError):
        return exc
    kind = classify(exc, PUBLISH_ERRORS)
    if kind is None:
        return unexpected(exc, f"RabbitMQ publish of {event.id}")
    if isinstance(exc, aiormq.exceptions.PublishError):
        frame = exc.message.delivery if exc.message is not None else None
        reason = f"{getattr(frame, 'reply_code', '?')} {getattr(frame, 'reply_text', '')}".strip()
        return UnroutableError(
            f"RabbitMQ returned {event.id}: no queue is bound to the exchange for routing key "
            f"{event.topic!r} ({reason}); bind a queue (`outboxkit provision --queue NAME`), then it is retried"
        )
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return TransientError(f"RabbitMQ nacked {event.id} (queue full or internal error)")
    text = str(exc.args[0]) if exc.args else repr(exc)
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        match = _TOO_LARGE.search(text)
        # One oversized message closes the channel: every publish in flight on it fails with the
        # same reason, but only the one that is really over the limit is refused for good.
        if match and len(event.payload) > int(match.group(2)):
            return PermanentError(f"RabbitMQ refused {event.id}: {text}")
        return TransientError(f"RabbitMQ closed the channel: {text}")
    if kind is UnroutableError:
        return UnroutableError(f"RabbitMQ closed the channel publishing {event.id} to {event.topic!r}: {text}")
    if kind is UnavailableError or (outage is not None and outage.is_down and kind is TransientError):
        # A channel that closed because the connection went down is an outage, not this event's fault.
        message = f"RabbitMQ cannot publish {event.id}: {type(exc).__name__}: {exc}"
        return outage.unavailable(message) if outage is not None and outage.is_down else UnavailableError(message)
    if kind is PermanentError:
        return PermanentError(f"RabbitMQ cannot route {event.id} with routing key {event.topic!r}: {exc}")
    return TransientError(f"RabbitMQ channel closed: {text}")


def _consumer_error(exc: Exception) -> DeliveryError:
    kind = classify(exc, CONSUMER_ERRORS)
    if kind is None:
        return unexpected(exc, "RabbitMQ consumer")
    return kind(f"RabbitMQ consumer: {type(exc).__name__}: {exc}")
