"""NATS error translation (H12): the publish path's and the consumer's tables, and the PubAck reader.

Every row is listed in docs/exceptions.md and exercised by tests/unit/test_broker_classification.py.
"""

from __future__ import annotations

import json

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from outboxkit.brokers._errors import Outage, Row, classify, timed_out, unexpected
from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import DeliveryError, PermanentError, TransientError, UnavailableError, UnroutableError

#: Exceptions of the publish path, most specific first: raised by ``Client.publish`` before anything
#: is sent, or read from the PubAck reply (:func:`_pub_ack_error`). ``nats.errors.TimeoutError`` and
#: ``APIError`` have rules of their own (:func:`translate`); anything else is a counted ``TransientError``.
PUBLISH_ERRORS: tuple[Row, ...] = (
    # The client cannot send now: closed for good (after most -ERR replies), closing, reconnecting
    # with its pending buffer full, or the server cannot be reached.
    (nats.errors.ConnectionClosedError, UnavailableError),
    (nats.errors.ConnectionDrainingError, UnavailableError),
    (nats.errors.ConnectionReconnectingError, UnavailableError),
    (nats.errors.OutboundBufferLimitError, UnavailableError),
    (nats.errors.StaleConnectionError, UnavailableError),  # and UnexpectedEOF
    (nats.errors.NoServersError, UnavailableError),
    (nats.errors.AuthorizationError, UnavailableError),
    # The message itself: no retry changes it.
    (nats.errors.MaxPayloadError, PermanentError),
    (nats.errors.BadSubjectError, PermanentError),
    (nats.errors.BadHeaderError, PermanentError),
    # Nothing captures the subject: a 503 "no responders" reply to the publish.
    (nats.js.errors.NoStreamResponseError, UnroutableError),
    (nats.errors.NoRespondersError, UnroutableError),
    (nats.js.errors.TooManyStalledMsgsError, TransientError),
)


#: JetStream ``err_code`` of an APIError in a PubAck -> class. A code not listed is a counted
#: ``TransientError`` (a newer server's code must not dead-letter events on its first sight).
JS_CODES: dict[int, type[DeliveryError]] = {
    # Refused for good: the message, or a header an outbox row carries (H11), is invalid here.
    10054: PermanentError,  # message size exceeds maximum allowed
    10097: PermanentError,  # header size exceeds maximum allowed of 64k
    10060: PermanentError,  # expected stream does not match (Nats-Expected-Stream)
    10070: PermanentError,  # wrong last msg ID (Nats-Expected-Last-Msg-Id)
    10071: PermanentError,  # wrong last sequence (Nats-Expected-Last-Sequence)
    10164: PermanentError,  # wrong last sequence
    10193: PermanentError,  # missing sequence for expected last sequence per subject
    10165: PermanentError,  # invalid per-message TTL (Nats-TTL)
    10166: PermanentError,  # per-message TTL is disabled
    **dict.fromkeys((10168, 10169, 10170, 10171, 10172), PermanentError),  # counters (Nats-Incr)
    **dict.fromkeys((10174, 10175, 10176, 10177, 10179, 10199, 10200, 10201), PermanentError),  # atomic batch
    **dict.fromkeys((10205, 10206, 10207, 10208), PermanentError),  # batch publish headers
    **dict.fromkeys((10188, 10189, 10190, 10191, 10192, 10203, 10212, 10223), PermanentError),  # schedules
    # The stream that captures the subject takes nothing: fixed by replacing the stream.
    10059: UnroutableError,  # stream not found
    10109: UnroutableError,  # invalid operation on sealed stream
    # JetStream itself is not available: an outage, not the event's fault (not counted).
    10008: UnavailableError,  # JetStream system temporarily unavailable
    10009: UnavailableError,  # JetStream cluster can not handle request (no leader)
    10035: UnavailableError,  # account not found
    10039: UnavailableError,  # JetStream not enabled for account
    10076: UnavailableError,  # JetStream not enabled
    10118: UnavailableError,  # stream is offline
    10194: UnavailableError,  # stream is offline: reason
    # Per event, a retry may fix it (counted).
    10077: TransientError,  # store failed, e.g. a full stream with discard=new
    10047: TransientError,  # insufficient storage resources available
    10028: TransientError,  # insufficient memory resources available
    10023: TransientError,  # insufficient resources
    10158: TransientError,  # duplicate message id is in process
    10163: TransientError,  # expected last sequence per subject temporarily unavailable
    10063: TransientError,  # expected stream sequence does not match
    10167: TransientError,  # too many requests
    10210: TransientError,  # atomic publish too many inflight
    10211: TransientError,  # batch publish too many inflight
}


#: Consumer calls (fetch, ack, nak): a connection problem reconnects the runner; the rest is retried.
CONSUMER_ERRORS: tuple[Row, ...] = (
    *(row for row in PUBLISH_ERRORS if row[1] is UnavailableError),
    (nats.errors.TimeoutError, TransientError),
    # nats-py also lets the plain asyncio TimeoutError out of fetch() when its deadline passes
    # between two of its own steps (a busy loop): the same meaning, no answer in time.
    (TimeoutError, TransientError),
    (nats.js.errors.APIError, TransientError),
)


def _pub_ack_error(msg: Msg) -> BaseException | None:
    """None for a PubAck; else the exception nats-py would have raised for this reply."""
    if msg.headers and msg.headers.get("Status") == "503":
        return nats.js.errors.NoStreamResponseError()
    reply = json.loads(msg.data)
    error = reply.get("error") if isinstance(reply, dict) else None
    if error is None:
        return None
    return nats.js.errors.APIError(
        code=error.get("code"), err_code=error.get("err_code"), description=error.get("description")
    )


def translate(exc: BaseException, event: OutboxEvent, outage: Outage | None = None) -> DeliveryError:
    """A nats-py exception of the publish path as an outboxkit error (tables above)."""
    if isinstance(exc, DeliveryError):
        return exc
    subject = event.topic
    what = f"{event.id} to {subject!r}"
    if isinstance(exc, nats.js.errors.APIError):
        return _api_error(exc, what, subject)
    if isinstance(exc, TimeoutError):  # nats.errors.TimeoutError is one; nats-py raises both
        message = f"NATS timed out publishing {what}"
        return timed_out(outage, message) if outage is not None else TransientError(message)
    kind = classify(exc, PUBLISH_ERRORS)
    if kind is UnavailableError:
        if outage is not None and outage.dead is not None:
            return outage.unavailable(f"NATS cannot publish {what} ({exc})")
        return UnavailableError(f"NATS cannot publish {what} now: {exc}")
    if kind is UnroutableError:
        return UnroutableError(f"no JetStream stream captures subject {subject!r}: create one with `outboxkit provision --broker URL --topic '{subject.split('.')[0]}.>'`")  # noqa: E501  # fmt: skip
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PermanentError(f"message of {len(event.payload)} bytes exceeds the NATS server's max_payload")
    if kind is not None:
        return kind(f"NATS refused {what}: {exc}")
    return unexpected(exc, f"NATS publish of {what}")


def _api_error(exc: nats.js.errors.APIError, what: str, subject: str) -> DeliveryError:
    code = exc.err_code
    kind = JS_CODES.get(code, TransientError) if code is not None else TransientError
    if code is None and (exc.code == 503 or isinstance(exc, nats.js.errors.ServiceUnavailableError)):
        kind = UnavailableError  # a bare 503 status: JetStream is not answering
    reason = f"{exc.description} (code {exc.code}, err_code {code})"
    if kind is UnroutableError:
        return UnroutableError(f"the JetStream stream of {subject!r} takes nothing: {reason}")
    return kind(f"JetStream refused {what}: {reason}")


def _consumer_error(exc: Exception) -> DeliveryError:
    kind = classify(exc, CONSUMER_ERRORS)
    if kind is None:
        return unexpected(exc, "NATS consumer")
    return kind(f"NATS consumer: {type(exc).__name__}: {exc}")
