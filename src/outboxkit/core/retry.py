"""What to do after a failed publish: reconnect, retry the event later, or dead-letter it (H12).

Every exception the relay can meet while publishing lands in one of three classes, on purpose:

* **unavailable** (:class:`~outboxkit.errors.UnavailableError`): the broker cannot be reached or
  its client is unusable. Nothing is wrong with the event, so no attempt is counted: the relay
  rebuilds its connections after a backoff;
* **transient** (:class:`~outboxkit.errors.TransientError`, including
  :class:`~outboxkit.errors.UnroutableError`, and *every exception nobody classified*): the attempt
  is counted on the row (``attempts``, ``last_error``), the event is retried after its own backoff
  while only its key waits, and after ``max_attempts`` it becomes a dead letter — never a retry
  loop that lasts forever;
* **permanent** (:class:`~outboxkit.errors.PermanentError`): retrying cannot help; dead letter now.
  So is an encoding failure nobody classified (``ValueError`` with its ``UnicodeEncodeError``,
  ``RecursionError``): a client that cannot encode a header holding a lone surrogate, or a value
  nested too deep, will fail the same way on every attempt (H13), so twenty attempts would only
  hold the key for a quarter of an hour for nothing.

Pure: the relay does the I/O these verdicts ask for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from outboxkit.core.backoff import backoff_delay
from outboxkit.errors import DeliveryError, PermanentError, TransientError, UnavailableError

#: Failed attempts before an event becomes a dead letter. With the retry schedule below (0.5 s
#: doubling to 60 s) 20 attempts span about 14 minutes, longer than a broker fail-over takes.
DEFAULT_MAX_ATTEMPTS = 20
RETRY_BASE = 0.5
RETRY_CAP = 60.0


class Outcome(Enum):
    RECONNECT = "reconnect"  # not the event's fault: rebuild the connection, count nothing
    RETRY = "retry"  # counted; try this event again after ``delay`` (its key waits)
    DEAD = "dead"  # counted; the event becomes a dead letter


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    error: DeliveryError  # the error as classed (an unknown exception becomes a TransientError)
    delay: float = 0.0

    @property
    def counted(self) -> bool:
        return self.outcome is not Outcome.RECONNECT


def classify(exc: BaseException) -> DeliveryError:
    """The outboxkit class of any exception; an encoding failure (``ValueError``,
    ``RecursionError``) is permanent, anything else nobody classified is transient (and counted)."""
    if isinstance(exc, DeliveryError):
        return exc
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}{': ' + text if text else ''}"
    if isinstance(exc, ValueError | RecursionError):
        # The input itself cannot be encoded (H13): the same attempt fails the same way forever.
        return PermanentError(f"cannot encode the event: {detail}")
    return TransientError(f"unexpected {detail}")


def judge(
    exc: BaseException,
    attempts: int,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    *,
    rng: random.Random | None = None,
) -> Verdict:
    """The verdict on one failed attempt of an event that had failed ``attempts`` times before."""
    error = classify(exc)
    if isinstance(error, UnavailableError):
        return Verdict(Outcome.RECONNECT, error)
    if isinstance(error, PermanentError):
        return Verdict(Outcome.DEAD, error)
    tried = attempts + 1
    if tried >= max_attempts:
        return Verdict(Outcome.DEAD, PermanentError(f"gave up after {tried} attempts: {error}"))
    return Verdict(Outcome.RETRY, error, backoff_delay(tried, base=RETRY_BASE, cap=RETRY_CAP, rng=rng))
