"""Provisioning: create what the relay publishes into, idempotently and with durable settings.

``outboxkit provision --broker URL --topic PATTERN`` asks the bus's own module (through
``brokers.registry.provisioner_for``) what that bus needs:

========  =====================================================================================
NATS      a JetStream stream capturing the topics: file storage, a duplicate window (G4, H7)
RabbitMQ  the durable topic exchange, and optionally a quorum queue bound to the topics (H7, H8)
Kafka     each topic, with the partitions and replication factor asked for
Redis     nothing: XADD creates a stream on first use (it checks the server's AOF setting, H7)
MQTT      nothing: topics need no creation (it says that only existing sessions keep messages)
========  =====================================================================================

Every bus module implements the same function, :class:`Provision`. With ``dry_run`` it only looks
and reports what it would do. Otherwise it changes what is missing and nothing else, so running it
twice reports every step ``unchanged`` the second time. Explicit options (``--duplicate-window``,
``--replicas``, ``--partitions``) are enforced on existing objects; left unset, an existing
object's settings are kept as they are and only a new one gets outboxkit's defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

#: create / update: changed now; unchanged: already as asked; ensure: declared again, a no-op if it
#: existed (the broker cannot say whether it did); nothing: the bus needs nothing here; warning:
#: something outboxkit will not change for you (the detail says what to do).
Outcome = Literal["create", "update", "unchanged", "ensure", "nothing", "warning"]

DEFAULT_DUPLICATE_WINDOW = 120.0  # seconds; JetStream's own default, spelled out

_DONE = {
    "create": "created",
    "update": "updated",
    "unchanged": "unchanged",
    "ensure": "ensured",
    "nothing": "nothing to create for",
}
_PLANNED = {**_DONE, "create": "would create", "update": "would update", "ensure": "would ensure"}


@dataclass(frozen=True)
class ProvisionRequest:
    """What to provision. ``topics`` are the topics (or patterns) the relay will publish under."""

    topics: tuple[str, ...]
    stream: str | None = None  # NATS: stream name (default: from the first topic, ``orders.>`` -> ORDERS)
    duplicate_window: float | None = None  # NATS: seconds (new streams: 120)
    replicas: int | None = None  # NATS: stream replicas (new streams: 1)
    queue: str | None = None  # RabbitMQ: a quorum queue bound to the topics (the consumer's --group)
    partitions: int | None = None  # Kafka: partitions of a new topic; more on an existing one
    replication: int | None = None  # Kafka: replication factor of a new topic


@dataclass(frozen=True)
class Step:
    """One thing provisioning looked at, and what became of it."""

    outcome: Outcome
    kind: str  # stream, exchange, queue, binding, topic, server
    name: str
    detail: str

    def line(self, *, dry_run: bool) -> str:
        if self.outcome == "warning":
            return f"warning: {self.kind} {self.name}: {self.detail}"
        verb = (_PLANNED if dry_run else _DONE)[self.outcome]
        return f"{verb} {self.kind} {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Provision(Protocol):
    """The function each bus module offers (``outboxkit.brokers.<bus>_provision.provision``)."""

    async def __call__(self, url: str, request: ProvisionRequest, *, dry_run: bool) -> list[Step]:
        """Look at the broker and create or update what ``request`` needs (nothing with ``dry_run``).

        Raises ``ConfigurationError`` for a request the bus cannot satisfy (a wildcard topic on a
        bus without wildcards, an existing object of an incompatible kind) and ``UnavailableError``
        when the broker cannot be reached."""
        ...


def changed(steps: Sequence[Step]) -> bool:
    """Whether provisioning created or updated anything."""
    return any(s.outcome in ("create", "update") for s in steps)


def seconds(value: float) -> str:
    """120.0 -> '2m', 90.0 -> '1m30s', 0.5 -> '0.5s'."""
    if value < 60 or value % 1:
        return f"{value:g}s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes}m" + (f"{rest}s" if rest else "")


__all__ = [
    "DEFAULT_DUPLICATE_WINDOW",
    "Outcome",
    "Provision",
    "ProvisionRequest",
    "Step",
    "changed",
    "seconds",
]
