"""The durable JetStream pull consumer the inbox runner reads from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from outboxkit.brokers._errors import Outage, consumer_errors
from outboxkit.brokers.base import Incoming
from outboxkit.brokers.nats.client import _check_url, connect, delivered_from, split_options
from outboxkit.brokers.nats.errors import _consumer_error
from outboxkit.brokers.nats.publisher import NatsPublisher
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, UnavailableError

log = logging.getLogger("outboxkit.nats")


class NatsConsumer:
    """Durable JetStream pull consumer named ``group`` over ``topics`` (subjects, wildcards allowed).

    The stream that captures the topics must exist (the relay's stream); ``connect`` finds it and
    creates or updates the durable consumer. Acks are synchronous (double-ack) so that "acked" means
    the server recorded it. ``retry`` is a NAK with delay; ``attempt`` is JetStream's delivery count.
    Unacked messages come back after ``ack_wait`` (default 30 s).
    """

    features = NatsPublisher.features

    def __init__(self, url: str, *, group: str, topics: Sequence[str], ack_wait: float | None = None) -> None:
        _check_url(url)
        url, options = split_options(url)
        try:
            ack_wait = ack_wait if ack_wait is not None else float(options.get("ack_wait", 30.0))
        except ValueError:
            raise ConfigurationError(f"ack_wait must be a number of seconds, got {options['ack_wait']!r}") from None
        if not topics:
            raise ConfigurationError("a NATS consumer needs at least one topic (subject)")
        self.url = url
        self.group = group
        self.topics = list(topics)
        self.ack_wait = ack_wait
        self._nc: Client | None = None
        self._sub: Any = None
        self._outage = Outage(log, f"NATS consumer {redact_url(url)}")

    async def connect(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self._outage = Outage(log, f"NATS consumer {redact_url(self.url)}")
        self._nc = await connect(self.url, name=f"outboxkit-consumer-{self.group}", outage=self._outage)
        js = self._nc.jetstream()
        try:
            with consumer_errors(_consumer_error):
                try:
                    stream = await js.find_stream_name_by_subject(self.topics[0])
                except nats.js.errors.NotFoundError:
                    raise ConfigurationError(f"no JetStream stream captures {self.topics[0]!r}: create one with `outboxkit provision --broker URL --topic '{self.topics[0]}'`") from None  # noqa: E501  # fmt: skip
                config = ConsumerConfig(
                    durable_name=self.group,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.ack_wait,
                    max_ack_pending=10_000,
                    **(
                        {"filter_subject": self.topics[0]}
                        if len(self.topics) == 1
                        else {"filter_subjects": self.topics}
                    ),
                )
                self._sub = await js.pull_subscribe(self.topics[0], durable=self.group, stream=stream, config=config)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._outage.closing = True
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(TimeoutError, nats.errors.Error):
                await asyncio.wait_for(self._nc.close(), 5)
        self._nc = None
        self._sub = None

    def _check_alive(self) -> None:
        if self._sub is None:
            raise UnavailableError("NATS consumer is not connected")
        if self._outage.dead is not None:
            raise self._outage.unavailable("NATS consumer cannot receive")

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        self._check_alive()
        with consumer_errors(_consumer_error):
            try:
                msgs = await self._sub.fetch(max_messages, timeout=timeout)
            except TimeoutError:
                # nats.errors.TimeoutError, or the plain asyncio one nats-py raises when the
                # deadline passes before its lingering pull is sent (a slow loop): both mean "none".
                if self._outage.is_down:
                    raise self._outage.unavailable("NATS fetch timed out") from None
                return []
            return [Incoming(delivered_from(m), attempt=_delivery_count(m), handle=m) for m in msgs]

    async def ack(self, incoming: Incoming) -> None:
        with consumer_errors(_consumer_error):
            try:
                await incoming.handle.ack_sync(timeout=5.0)
            except nats.errors.MsgAlreadyAckdError:
                return  # acked (or nak'ed) once already: the server has its answer

    async def retry(self, incoming: Incoming, delay: float) -> None:
        with consumer_errors(_consumer_error):
            try:
                await incoming.handle.nak(delay=delay)
            except nats.errors.MsgAlreadyAckdError:
                return


def _delivery_count(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # a message outside JetStream has no metadata
        return 1
