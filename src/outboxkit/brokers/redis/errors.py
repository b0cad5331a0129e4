"""Redis error translation (H12): redis-py's reply classes and the first words of other replies.

Every row is listed in docs/exceptions.md and exercised by tests/unit/test_broker_classification.py.
"""

from __future__ import annotations

import redis.exceptions as rx
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from outboxkit.brokers._errors import Outage, Row, classify, timed_out, unexpected
from outboxkit.errors import DeliveryError, PermanentError, TransientError, UnavailableError, UnroutableError

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


#: redis-py exceptions, most specific first. redis-py turns an error reply into a class by its first
#: word (and strips that word from the message): -NOAUTH/-WRONGPASS AuthenticationError, -LOADING
#: BusyLoadingError, -READONLY ReadOnlyError, -OOM OutOfMemoryError, -NOPERM NoPermissionError, ...
#: Other replies are a plain ResponseError, classed by their first word (:data:`REPLY_PREFIXES`).
PUBLISH_ERRORS: tuple[Row, ...] = (
    # The server cannot take writes from us now, whatever the event: an outage (not counted).
    (rx.AuthenticationError, UnavailableError),  # -NOAUTH, -WRONGPASS (a password changed)
    (rx.AuthorizationError, UnavailableError),
    (rx.BusyLoadingError, UnavailableError),  # -LOADING: a restarted server still reads its data
    (RedisConnectionError, UnavailableError),  # lost/refused connection, -ERR max number of clients
    (rx.ReadOnlyError, UnavailableError),  # -READONLY: we talk to a replica (after a failover)
    (rx.OutOfMemoryError, UnavailableError),  # -OOM: maxmemory reached with noeviction
    (rx.MasterDownError, UnavailableError),  # -MASTERDOWN: a replica lost its primary
    (rx.ClusterDownError, UnavailableError),  # -CLUSTERDOWN
    (rx.InvalidResponse, UnavailableError),  # replies out of step: the connection is reset
    # This stream (key) takes nothing from us: ACL, or another cluster node owns it.
    (rx.NoPermissionError, UnroutableError),  # -NOPERM
    (rx.AskError, UnroutableError),  # -MOVED, -ASK: a cluster; outboxkit speaks to one node
    # The entry itself cannot be encoded.
    (rx.DataError, PermanentError),
    # Per event, a retry may fix it (counted).
    (RedisTimeoutError, TransientError),  # no reply within ack_timeout (UnavailableError in an outage)
    (rx.TryAgainError, TransientError),
    (rx.ExecAbortError, TransientError),
    (rx.NoScriptError, TransientError),
    (ResponseError, TransientError),  # by REPLY_PREFIXES first
    (OSError, UnavailableError),
)


#: First word of an error reply redis-py has no class for -> class; any other reply is transient.
REPLY_PREFIXES: dict[str, type[DeliveryError]] = {
    "WRONGTYPE": UnroutableError,  # the key exists and is not a stream
    "MISCONF": UnavailableError,  # RDB snapshots fail: the server refuses writes until fixed
    "NOREPLICAS": UnavailableError,  # min-replicas-to-write not met
    "BUSY": TransientError,  # a script or module command is running
    "ERR": TransientError,  # a generic error (an unknown or renamed command, ...)
}


def translate(exc: BaseException, topic: str, outage: Outage | None = None) -> DeliveryError:
    """A redis-py exception of the XADD path as an outboxkit error (tables above)."""
    if isinstance(exc, DeliveryError):
        return exc
    kind = classify(exc, PUBLISH_ERRORS)
    if kind is None:
        return unexpected(exc, f"Redis XADD to {topic!r}")
    text = str(exc) or type(exc).__name__
    if type(exc) is ResponseError:
        word = text.split(" ", 1)[0]
        kind = REPLY_PREFIXES.get(word, TransientError)
    elif isinstance(exc, RedisTimeoutError | TimeoutError):
        message = f"no reply to XADD to {topic!r}: {text}"
        return timed_out(outage, message) if outage is not None else TransientError(message)
    code = getattr(exc, "status_code", None)  # the reply's first word, which redis-py removed
    reply = f"{code} {text}" if code else text
    if kind is UnroutableError:
        if reply.startswith("WRONGTYPE"):
            return UnroutableError(f"Redis key {topic!r} exists and is not a stream: {reply}")
        return UnroutableError(f"Redis refuses XADD to {topic!r}: {reply}")
    if kind is UnavailableError:
        return UnavailableError(f"Redis cannot take XADD to {topic!r} now: {type(exc).__name__}: {reply}")
    if kind is PermanentError:
        return PermanentError(f"Redis cannot store the entry for {topic!r}: {reply}")
    return TransientError(f"Redis refused XADD to {topic!r}: {reply}")


def _consumer_error(exc: Exception) -> DeliveryError:
    return translate(exc, "the consumer's streams")
