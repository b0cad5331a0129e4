"""What every bus adapter's error translation shares (H12: every exception is classed on purpose).

Each adapter keeps its own translation table at its boundary (``PUBLISH_ERRORS`` and friends in
``brokers/<bus>/errors.py``, listed in docs/exceptions.md), because only it knows its client library. The
rules common to every bus live here, so that they are the same everywhere:

* :class:`Outage` knows whether the adapter's connection is down right now (one WARNING line when it
  drops, one when it is back) and whether its client is *dead*: closed for good, so that only a new
  publisher can send again (one ERROR line naming the reason).
* :func:`timed_out`: a confirmation that did not come in time is ``UnavailableError`` while the
  connection is down or the client dead, so that a long outage does not burn the events' attempts;
  while connected it is a ``TransientError``, counted.
* :func:`unexpected`: an exception no table names is a ``TransientError``, counted, so that it ends as
  a dead letter after ``--max-attempts`` instead of retrying forever or killing the relay; its type
  is logged once at WARNING so that the table can learn it.
* :func:`classify` walks a table of ``(exception class, outboxkit class)`` rows, most specific first.
* :func:`consumer_errors` wraps a consumer call: nothing raw escapes, and only ``UnavailableError``
  (the runner reconnects) or ``TransientError`` (the runner retries) come out — a consumer has no
  event of its own to dead-letter.

What the relay and the inbox do with each class: docs/exceptions.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence

from outboxkit.errors import DeliveryError, OutboxkitError, TransientError, UnavailableError

log = logging.getLogger("outboxkit.brokers")

#: One row of a translation table: instances of the exception class become the outboxkit class.
Row = tuple[type[BaseException], type[DeliveryError]]

_REPORTED: set[type[BaseException]] = set()


class Outage:
    """The state of one adapter's connection, for classing errors and for one log line per change.

    ``down()``/``up()`` are called by the adapter when its client reports a lost / restored
    connection; repeated calls log nothing. ``kill(reason)`` marks the client closed for good.
    ``closing`` is set by the adapter's own ``close()``: a connection we close is not an outage."""

    def __init__(self, logger: logging.Logger, what: str, *, recovery: str = "reconnecting in the background") -> None:
        self.log = logger
        self.what = what
        self.recovery = recovery
        self.since: float | None = None
        self.closing = False
        self.dead: str | None = None

    @property
    def is_down(self) -> bool:
        """Nothing can be sent now: the connection is lost, or the client is closed for good."""
        return self.since is not None or self.dead is not None

    def down(self, reason: object = None) -> None:
        if self.since is None and not self.closing and self.dead is None:
            self.since = time.monotonic()
            detail = f" ({reason})" if reason not in (None, "") else ""
            self.log.warning("%s connection lost%s; %s", self.what, detail, self.recovery)

    def up(self) -> None:
        if self.since is not None:
            self.log.warning("%s reconnected after %.1fs", self.what, time.monotonic() - self.since)
            self.since = None

    def kill(self, reason: str) -> None:
        """The client cannot send any more without being rebuilt; every later publish is
        ``UnavailableError`` so that the relay throws this publisher away and builds a new one."""
        if self.dead is None and not self.closing:
            self.dead = reason
            self.log.error("%s client closed for good: %s; a new publisher must be built", self.what, reason)

    def unavailable(self, message: str) -> UnavailableError:
        if self.dead is not None:
            return UnavailableError(f"{message}: the {self.what} client is closed for good ({self.dead})")
        return UnavailableError(f"{message}: the {self.what} connection is down")


def timed_out(outage: Outage, message: str) -> TransientError:
    """No confirmation within the ack timeout: not counted during an outage, counted otherwise."""
    if outage.is_down:
        return outage.unavailable(message)
    return TransientError(message)


def unexpected(exc: BaseException, what: str) -> TransientError:
    """An exception no table names: counted as a transient failure (never raw, never uncounted)."""
    kind = type(exc)
    if kind not in _REPORTED:
        _REPORTED.add(kind)
        log.warning(
            "%s: %s.%s is not in the adapter's error table; counted as a transient failure",
            what,
            kind.__module__,
            kind.__qualname__,
        )
    return TransientError(f"{what}: {kind.__name__}: {exc}")


def classify(exc: BaseException, table: Sequence[Row]) -> type[DeliveryError] | None:
    """The outboxkit class of the first row ``exc`` is an instance of, or None."""
    for cls, kind in table:
        if isinstance(exc, cls):
            return kind
    return None


@contextlib.contextmanager
def consumer_errors(translate: Callable[[Exception], DeliveryError]) -> Iterator[None]:
    """Run a consumer call so that only ``UnavailableError`` or ``TransientError`` leave it.

    ``translate`` is the bus's table for consumer calls. A ``PermanentError`` it may return (a table
    shared with the publisher) is demoted to transient: a consumer call has no event to dead-letter,
    and the inbox runner counts failed deliveries per event itself."""
    try:
        yield
    except OutboxkitError:  # classed already (or a ConfigurationError of connect(): not ours to change)
        raise
    except Exception as exc:
        raise for_consumer(translate(exc)) from exc


def for_consumer(error: DeliveryError) -> TransientError:
    """``error`` as a consumer call may raise it: unavailable or transient, never permanent."""
    if isinstance(error, TransientError):
        return error
    return TransientError(str(error))
