"""What the relay reports as it works, to whoever watches (metrics, readiness).

The relay floor cannot import ``outboxkit.web``; it calls this Protocol instead, and
``outboxkit.web.RelayMetrics`` implements it. Every method is called on the relay's event loop,
must be cheap and must not raise or do I/O.
"""

from __future__ import annotations

from typing import Literal, Protocol

from outboxkit.core.envelope import OutboxEvent

FailureKind = Literal["transient", "unroutable", "permanent"]


class RelayObserver(Protocol):
    def published(self, event: OutboxEvent, latency_s: float) -> None:
        """The broker confirmed ``event``, ``latency_s`` seconds after it was handed to the client."""
        ...

    def failed(self, kind: FailureKind) -> None:
        """One publish attempt failed."""
        ...

    def dead_lettered(self) -> None:
        """One event became a dead letter."""
        ...

    def set_aside(self) -> None:
        """One input could not even be dead-lettered: it is skipped in memory by this process (H13)."""
        ...

    def handover(self, buckets: int = 1) -> None:
        """Buckets taken over from other relays' expired or released leases."""
        ...

    def fenced(self, events: int) -> None:
        """Confirmed events that could not be marked because the lease ended first (H6)."""
        ...

    def set_leases(self, buckets: int) -> None:
        """How many buckets this relay holds now."""
        ...

    def db_ok(self) -> None:
        """A database round trip succeeded."""
        ...

    def broker_ok(self) -> None:
        """The broker confirmed, or there was nothing for it to confirm."""
        ...


class NullObserver:
    """The default: watches nothing, costs nothing."""

    def published(self, event: OutboxEvent, latency_s: float) -> None:
        pass

    def failed(self, kind: FailureKind) -> None:
        pass

    def dead_lettered(self) -> None:
        pass

    def set_aside(self) -> None:
        pass

    def handover(self, buckets: int = 1) -> None:
        pass

    def fenced(self, events: int) -> None:
        pass

    def set_leases(self, buckets: int) -> None:
        pass

    def db_ok(self) -> None:
        pass

    def broker_ok(self) -> None:
        pass
