"""The Kafka consumer the inbox runner reads from (offsets committed on ack), and a reader for tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from outboxkit.brokers._errors import consumer_errors
from outboxkit.brokers.base import Delivered, Incoming
from outboxkit.brokers.kafka.client import _LibrdkafkaLog, _truthy, ensure_topics, parse_url
from outboxkit.brokers.kafka.errors import _consumer_error
from outboxkit.brokers.kafka.publisher import KafkaPublisher
from outboxkit.brokers.kafka.wire import delivered_from
from outboxkit.core.urls import redact_url
from outboxkit.errors import DeliveryError, UnavailableError, UnroutableError

log = logging.getLogger("outboxkit.kafka")


@dataclass
class _Partition:
    """What this consumer has handed out of one partition and not yet committed."""

    outstanding: dict[int, None] = field(default_factory=dict)  # delivered, not acked (ordered set)
    next_offset: int = -1  # one past the highest offset handed out
    committed: int = -1
    rewind: tuple[int, float] | None = None  # (offset, due monotonic time) of a pending retry
    attempts: dict[int, int] = field(default_factory=dict)  # offset -> deliveries by this consumer

    def commit_position(self) -> int:
        # Never past an unacked message: Kafka has one committed offset per partition, so a later
        # ack must not let a crash skip an earlier message still being processed or retried.
        return min(self.outstanding) if self.outstanding else self.next_offset


class KafkaConsumer:
    """Consumer group ``group`` over ``topics``, committing offsets only on ``ack``.

    ``assign=True`` (or ``?assign=true``) assigns every partition of ``topics`` explicitly instead of
    joining the group (no rebalancing, no other members); offsets are still committed for ``group``.
    ``retry`` rewinds the partition to that message after the delay: it and every later message of
    the partition come again, in order, so a retry holds up its partition for the delay.
    """

    features = KafkaPublisher.features

    def __init__(self, url: str, *, group: str, topics: Sequence[str], assign: bool | None = None, **opts: Any) -> None:
        parsed = parse_url(url)
        self.url = url
        self.group = group
        self.topics = list(topics)
        self.assign = assign if assign is not None else _truthy(parsed.options.get("assign"))
        self.config: dict[str, Any] = {
            # A group without committed offsets starts at the beginning: messages published after
            # connect() but before the first fetch must not be skipped ("latest" would skip them).
            "auto.offset.reset": "earliest",
            "socket.connection.setup.timeout.ms": 3000,
            "reconnect.backoff.max.ms": 1000,
            **parsed.config,
            **{k: str(v) for k, v in opts.items()},
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "logger": _LibrdkafkaLog(),
        }
        self._consumer: confluent_kafka.Consumer | None = None
        # One thread owns the (blocking) client; all state below is touched only on it.
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._parts: dict[tuple[str, int], _Partition] = {}

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def connect(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="outboxkit-kafka-consumer")
        try:
            with consumer_errors(_consumer_error):
                await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self) -> None:
        consumer = confluent_kafka.Consumer(self.config)
        try:
            metadata = consumer.list_topics(timeout=3)
        except KafkaException as exc:
            consumer.close()
            raise UnavailableError(f"Kafka at {redact_url(self.url)} is unavailable: {exc.args[0].str()}") from None
        missing = [t for t in self.topics if t not in metadata.topics or metadata.topics[t].error is not None]
        if missing:
            try:
                ensure_topics(self.config, missing)
            except DeliveryError:
                consumer.close()
                raise
        if self.assign:
            tps = []
            for topic in self.topics:
                info = consumer.list_topics(topic, timeout=5).topics.get(topic)
                if info is None or info.error is not None or not info.partitions:
                    consumer.close()
                    raise UnroutableError(f"Kafka topic {topic!r} does not exist: create it first")
                tps += [TopicPartition(topic, p) for p in sorted(info.partitions)]
            # No offset given: each partition resumes at the group's committed offset, else earliest.
            consumer.assign(tps)
            for tp in tps:
                self._parts[(tp.topic, tp.partition)] = _Partition()
        else:
            consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._consumer = consumer

    def _on_assign(self, _consumer: Any, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self._parts[(tp.topic, tp.partition)] = _Partition()

    def _on_revoke(self, _consumer: Any, tps: list[TopicPartition]) -> None:
        # Messages of a revoked partition still in hand are the new owner's to redeliver; their
        # acks become no-ops here (at-least-once, the inbox dedupes).
        for tp in tps:
            self._parts.pop((tp.topic, tp.partition), None)

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._consumer is not None:
            await self._run(self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=True)
        self._executor = None
        self._parts.clear()

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        if self._consumer is None:
            raise UnavailableError("Kafka consumer is not connected")
        with consumer_errors(_consumer_error):
            result: list[Incoming] = await self._run(self._receive, max_messages, timeout)
        return result

    def _receive(self, max_messages: int, timeout: float) -> list[Incoming]:
        assert self._consumer is not None
        deadline = time.monotonic() + timeout
        while True:
            wait = self._apply_rewinds(deadline)
            out: list[Incoming] = []
            for msg in self._consumer.consume(max_messages, max(wait, 0.0)):
                err = msg.error()
                if err is not None:
                    if err.fatal():  # this consumer can never fetch again: the runner builds a new one
                        raise _consumer_error(KafkaException(err))
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.debug("Kafka consumer error: %s", err.str())
                    continue
                incoming = self._track(msg)
                if incoming is not None:
                    out.append(incoming)
            if out or time.monotonic() >= deadline:
                return out

    def _apply_rewinds(self, deadline: float) -> float:
        """Seek partitions whose retry delay is over; returns how long the next consume may wait."""
        assert self._consumer is not None
        now = time.monotonic()
        wait = deadline - now
        for (topic, partition), state in self._parts.items():
            if state.rewind is None:
                continue
            offset, due = state.rewind
            if due <= now:
                # Seek while still paused: librdkafka drops what it had fetched past the offset.
                tp = TopicPartition(topic, partition, offset)
                self._consumer.seek(tp)
                self._consumer.resume([tp])
                state.rewind = None
            else:
                wait = min(wait, due - now)
        return wait

    def _track(self, msg: Message) -> Incoming | None:
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        state = self._parts.get((topic, partition))
        if state is None or state.rewind is not None:
            # Fetched before the partition was paused for a retry, or after it was revoked: it will
            # be fetched again (after the rewind / by the new owner), in order.
            return None
        state.outstanding[offset] = None
        state.next_offset = max(state.next_offset, offset + 1)
        attempt = state.attempts[offset] = state.attempts.get(offset, 0) + 1
        return Incoming(message=delivered_from(msg), attempt=attempt, handle=(topic, partition, offset))

    async def ack(self, incoming: Incoming) -> None:
        with consumer_errors(_consumer_error):
            await self._run(self._ack, incoming.handle)

    def _ack(self, handle: tuple[str, int, int]) -> None:
        assert self._consumer is not None
        topic, partition, offset = handle
        state = self._parts.get((topic, partition))
        if state is None or offset not in state.outstanding:
            return  # revoked, or rewound by a retry: it comes again and is acked then
        del state.outstanding[offset]
        state.attempts.pop(offset, None)
        position = state.commit_position()
        if position > state.committed:
            try:
                # Synchronous: once ack() returns, the offset is stored by the group coordinator.
                self._consumer.commit(offsets=[TopicPartition(topic, partition, position)], asynchronous=False)
            except KafkaException as exc:
                raise _consumer_error(exc) from None
            state.committed = position

    async def retry(self, incoming: Incoming, delay: float) -> None:
        with consumer_errors(_consumer_error):
            await self._run(self._retry, incoming.handle, delay)

    def _retry(self, handle: tuple[str, int, int], delay: float) -> None:
        assert self._consumer is not None
        topic, partition, offset = handle
        state = self._parts.get((topic, partition))
        if state is None or offset not in state.outstanding:
            return
        if state.rewind is not None and state.rewind[0] <= offset:
            return  # an earlier message of the partition is being retried: this one comes again too
        # Later messages of the partition in hand are redelivered after the rewind as well.
        for later in [o for o in state.outstanding if o >= offset]:
            del state.outstanding[later]
        state.next_offset = offset
        state.rewind = (offset, time.monotonic() + delay)
        self._consumer.pause([TopicPartition(topic, partition)])


def read_topics(url: str, topics: Sequence[str], expect: int, timeout: float = 30.0) -> list[Delivered]:
    """Every message of ``topics`` from offset 0, in partition order (blocking; run it in a thread).

    Partitions are assigned explicitly from offset 0: no group join and no ListOffsets request, which
    keeps it fast and exact on Tansu too. Stops at ``expect`` messages or after ``timeout`` seconds."""
    config = {
        **parse_url(url).config,
        "group.id": "outboxkit-reader",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "logger": _LibrdkafkaLog(),
    }
    consumer = confluent_kafka.Consumer(config)
    out: list[Delivered] = []
    try:
        tps = []
        for topic in topics:
            info = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if info is not None and info.error is None:
                tps += [TopicPartition(topic, p, 0) for p in sorted(info.partitions)]
        consumer.assign(tps)
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append(delivered_from(msg))
    finally:
        consumer.close()
    return out
