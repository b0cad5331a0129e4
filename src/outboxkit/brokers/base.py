"""The broker roles. A newcomer adding a bus reads this file, one adapter and the conformance suite.

* :class:`Publisher` — the relay's side: send an event and learn when the broker confirmed it.
* :class:`Consumer` — the inbox's side: receive messages, acknowledge them after the consumer's
  database transaction committed, or ask for a later redelivery.
* :class:`Delivered` — what a subscriber reads back (used by the inbox, the demo and the lab).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from outboxkit.core.envelope import OutboxEvent


@dataclass(frozen=True, slots=True)
class Features:
    """What a bus promises; the conformance suite and the relay read these."""

    native_dedupe: bool  # the broker drops a re-sent event id within its window (G4)
    persistent: bool  # a confirmed message survives a broker restart (given safe settings, H7)
    ordered: bool  # messages of one key, sent one after another, are stored in that order
    # A key's messages sent back to back are written in send order, and after one fails none of the
    # key's later ones is written (Kafka's idempotent producer with its gapless guarantee): the relay
    # may then have several events of a key in flight (RelayConfig.key_depth). Off by default.
    ordered_pipeline: bool = False


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message as a subscriber received it, with the CloudEvents attributes decoded."""

    event_id: str
    topic: str
    key: str | None
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Publisher(Protocol):
    """Publishes events with confirmation. Used by one relay task; not thread-safe.

    Errors are outboxkit types only, classed on purpose (H12; docs/exceptions.md): ``UnavailableError``
    when the broker cannot be reached or the client cannot send any more (closed for good; a timeout
    during an outage too): not the event's fault, the relay rebuilds the publisher; ``UnroutableError``
    when nothing takes the topic; ``PermanentError`` when the broker refuses the message for good (too
    large, invalid topic or header); any other ``TransientError`` for what a retry may fix (a timeout
    while connected, a busy broker, and every exception the adapter's table does not name). The rules
    every adapter shares live in ``brokers/_errors.py``.
    """

    features: Features

    async def connect(self) -> None:
        """Connect, failing fast with ``UnavailableError`` if the broker cannot be reached now.

        After a successful connect the adapter reconnects by itself on later outages."""
        ...

    async def close(self) -> None:
        """Flush and close. Safe to call twice."""
        ...

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        """Hand ``event`` to the broker and return a future resolved when the broker confirmed it
        (G3), or failed with an outboxkit error (including a timeout).

        Returning from this call means the message was sent, not confirmed: callers pipeline many
        publishes and await the futures. Publishes are sent in call order on one connection.
        Every copy carries ``event.id`` as the broker's native dedupe id where one exists (G4).
        """
        ...


@dataclass(slots=True)
class Incoming:
    """A message handed to a consumer, not yet acknowledged.

    ``attempt`` is the broker's delivery count when it has one (1 = first delivery), else 1.
    ``handle`` is the adapter's own reference (a nats Msg, an aio-pika message, a Kafka
    ``(partition, offset)``, a Redis entry id, ...); only the adapter that produced it reads it."""

    message: Delivered
    attempt: int = 1
    handle: Any = None


class Consumer(Protocol):
    """Receives messages of one subscription (a durable consumer / queue / group / session) for the
    inbox runner. Used by one task; not thread-safe.

    Delivery is at-least-once: a message not acked before a crash, a restart or ``ack_wait`` comes
    back. ``ack`` is called only after the consumer's database transaction committed (G7).

    ``receive``, ``ack`` and ``retry`` raise outboxkit errors only: ``UnavailableError`` (reconnect)
    or another ``TransientError`` (retry); never a raw library exception, never ``PermanentError``.
    """

    features: Features

    async def connect(self) -> None:
        """Connect and create the durable subscription if missing (idempotent)."""
        ...

    async def close(self) -> None:
        """Close without acking anything still in hand (the broker will redeliver it)."""
        ...

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds for the first."""
        ...

    async def ack(self, incoming: Incoming) -> None:
        """The message is processed for good (or dead-lettered): never deliver it again."""
        ...

    async def retry(self, incoming: Incoming, delay: float) -> None:
        """Deliver this message again after about ``delay`` seconds, with ``attempt`` higher.

        The inbox also calls it to hold a message behind a failing one of its key, so it must not
        spend a budget past which the broker discards the message unprocessed (a quorum queue's
        delivery limit, a JetStream ``max_deliver``): keep the message in hand, or use a way of
        redelivering that the broker does not count against such a limit."""
        ...
