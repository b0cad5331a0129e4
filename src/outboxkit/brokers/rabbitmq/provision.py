"""RabbitMQ provisioning: the durable topic exchange, and a quorum queue bound to the topics.

The relay publishes every event to one durable topic exchange (``?exchange=NAME``, default
``outboxkit``) with ``mandatory`` set, so a message no queue takes is returned and kept pending as
unroutable (H8). What makes the events durable is the queue they land in (H7): ``--queue NAME``
declares a durable **quorum** queue and binds it with each topic pattern (``orders.*``,
``orders.#``; the NATS-style ``orders.>`` is accepted and bound as ``orders.#``). Name it like the
consumer's ``--group``: ``outboxkit consume`` then finds its queue already holding every event.

AMQP 0-9-1 cannot list bindings, so bindings are declared again on every run (a no-op when
present) and reported as ``ensured`` on a queue that already existed; exchanges and queues are
looked up with a passive declare first and reported exactly.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiormq.exceptions

from outboxkit.brokers.provision import Outcome, ProvisionRequest, Step
from outboxkit.brokers.rabbitmq.client import _Settings, connect, declare_exchange
from outboxkit.errors import ConfigurationError


def binding_key(topic: str) -> str:
    """A topic pattern as an AMQP binding key: NATS' trailing ``>`` becomes ``#``."""
    tokens = topic.split(".")
    if ">" in tokens[:-1]:
        raise ConfigurationError(f"{topic!r}: '>' may only be the last token")
    return ".".join("#" if t == ">" else t for t in tokens)


async def _exists(conn: Any, declare: str, name: str) -> bool:
    """A passive declare on a throw-away channel: a missing entity closes that channel (404)."""
    channel = await conn.channel()
    try:
        if declare == "exchange":
            await channel.declare_exchange(name, passive=True)
        else:
            await channel.declare_queue(name, passive=True)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def provision(url: str, request: ProvisionRequest, *, dry_run: bool) -> list[Step]:
    """Declare the exchange (and ``request.queue`` with its bindings) unless they exist."""
    settings = _Settings(url)
    keys = [binding_key(t) for t in request.topics]
    conn, outage = await connect(url, name="outboxkit-provision")
    try:
        steps: list[Step] = []
        exchange_name = settings.exchange
        had_exchange = await _exists(conn, "exchange", exchange_name)
        detail = "durable topic exchange; the relay publishes every event here, routing key = topic"
        channel = await conn.channel()
        exchange = None
        if not dry_run:
            exchange = await declare_exchange(channel, exchange_name)
        steps.append(Step("unchanged" if had_exchange else "create", "exchange", exchange_name, detail))
        if request.queue is None:
            steps.append(
                Step(
                    "warning",
                    "queue",
                    "(none)",
                    "no --queue given: unless a queue is bound for these topics, the relay's publishes are "
                    "unroutable (kept pending). Add --queue NAME (the consumer's --group) or start "
                    "`outboxkit consume` once",
                )
            )
            return steps
        had_queue = await _exists(conn, "queue", request.queue)
        if not dry_run:
            try:
                # Quorum: replicated, fsynced before the confirm, counts deliveries (H7).
                queue = await channel.declare_queue(request.queue, durable=True, arguments={"x-queue-type": "quorum"})
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                raise ConfigurationError(
                    f"queue {request.queue!r} exists with other settings (want a durable quorum queue): {exc}"
                ) from None
            assert exchange is not None
            for key in keys:
                await queue.bind(exchange, routing_key=key)
        steps.append(Step("unchanged" if had_queue else "create", "queue", request.queue, "durable quorum queue"))
        for key in keys:
            # AMQP cannot list bindings: on an existing queue, declaring one again is a no-op that
            # we cannot tell apart from creating it, so it is reported as ensured, not as a change.
            outcome: Outcome = "ensure" if had_queue else "create"
            steps.append(Step(outcome, "binding", f"{exchange_name} -> {request.queue}", key))
        return steps
    finally:
        outage.closing = True
        with contextlib.suppress(Exception):
            await conn.close()


__all__ = ["binding_key", "provision"]
