"""What the fleet knows of each outbox as it runs: counts, the last round trips, the last complaint.

:class:`TenantObserver` is one outbox's :class:`~outboxkit.relay.observer.RelayObserver` (the relay
calls it on its event loop: cheap, no I/O). :class:`TenantLog` is a logging filter: every line a
relay logs while serving an outbox gets that outbox's ``tenant`` field (the relay's own lines say
nothing of tenants), and the last warning or error of each outbox is kept for the status.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from outboxkit.core.envelope import OutboxEvent
from outboxkit.relay.observer import FailureKind

#: The outbox whose relay runs in this asyncio task (tasks copy the context they are created in).
TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("outboxkit_tenant", default=None)


@dataclass
class TenantObserver:
    tenant: str
    clock: Callable[[], float] = time.monotonic
    published: int = 0
    failed_attempts: int = 0
    dead_letters: int = 0
    fenced_events: int = 0
    handovers: int = 0
    buckets: int = 0
    db_ok_at: float | None = None
    broker_ok_at: float | None = None
    last_problem: str | None = None
    last_problem_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)

    # -- RelayObserver ----------------------------------------------------------------------------
    def published_event(self, event: OutboxEvent, latency_s: float) -> None:
        self.published += 1
        self.broker_ok_at = self.clock()

    def failed(self, kind: FailureKind) -> None:
        self.failed_attempts += 1

    def dead_lettered(self) -> None:
        self.dead_letters += 1

    def set_aside(self) -> None:
        self.dead_letters += 1

    def handover(self, buckets: int = 1) -> None:
        self.handovers += buckets

    def fenced(self, events: int) -> None:
        self.fenced_events += events

    def set_leases(self, buckets: int) -> None:
        self.buckets = buckets

    def db_ok(self) -> None:
        self.db_ok_at = self.clock()

    def broker_ok(self) -> None:
        self.broker_ok_at = self.clock()

    def problem(self, text: str) -> None:
        self.last_problem, self.last_problem_at = text, self.clock()


class _Observer:
    """The RelayObserver face of a TenantObserver (``published`` is a counter there)."""

    def __init__(self, state: TenantObserver) -> None:
        self.state = state

    def published(self, event: OutboxEvent, latency_s: float) -> None:
        self.state.published_event(event, latency_s)

    def failed(self, kind: FailureKind) -> None:
        self.state.failed(kind)

    def dead_lettered(self) -> None:
        self.state.dead_lettered()

    def set_aside(self) -> None:
        self.state.set_aside()

    def handover(self, buckets: int = 1) -> None:
        self.state.handover(buckets)

    def fenced(self, events: int) -> None:
        self.state.fenced(events)

    def set_leases(self, buckets: int) -> None:
        self.state.set_leases(buckets)

    def db_ok(self) -> None:
        self.state.db_ok()

    def broker_ok(self) -> None:
        self.state.broker_ok()


def relay_observer(state: TenantObserver) -> _Observer:
    return _Observer(state)


class TenantLog(logging.Filter):
    """Adds ``tenant`` to records logged inside an outbox's task; keeps each outbox's last warning."""

    def __init__(self, lookup: Callable[[str], TenantObserver | None]) -> None:
        super().__init__()
        self.lookup = lookup

    def filter(self, record: logging.LogRecord) -> bool:
        tenant = TENANT.get()
        if tenant is not None:
            if not hasattr(record, "tenant"):
                record.tenant = tenant
            if record.levelno >= logging.WARNING:
                state = self.lookup(tenant)
                if state is not None:
                    state.problem(record.getMessage())
        return True


__all__ = ["TENANT", "TenantLog", "TenantObserver", "relay_observer"]
