"""Kafka: idempotent producer with ``acks=all``, message key = event key, CloudEvents ``ce_`` headers.

The producer is librdkafka's (confluent-kafka) with ``enable.idempotence=true``: the broker drops a
retried batch it already stored (the producer id + sequence numbers are Kafka's native dedupe, G4),
and retries inside the client never reorder a partition. The event key is the message key, so a
key's events land in one partition in send order (G5); keys are hashed with ``murmur2_random``, the
Java client's partitioner, so other Kafka clients put the same key in the same partition.

librdkafka reconnects by itself after an outage (G8); a poll thread turns its delivery reports into
resolved asyncio futures on the relay's event loop.

Durability (H7): ``acks=all`` waits for every in-sync replica, which is only as safe as the topic's
``replication.factor`` (>= 3) and ``min.insync.replicas`` (>= 2); Kafka does not fsync per message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from outboxkit.brokers.base import Delivered, Features, Incoming
from outboxkit.core.envelope import OutboxEvent, cloudevent_attributes
from outboxkit.core.urls import redact_url
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    TransientError,
    UnavailableError,
    UnroutableError,
)

log = logging.getLogger("outboxkit.kafka")

#: URL options read by outboxkit itself; every other ``?name=value`` goes to librdkafka as is.
_OWN_OPTIONS = frozenset({"assign", "ack_timeout"})

_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,
    KafkaError._INVALID_ARG,
    KafkaError._KEY_SERIALIZATION,
    KafkaError._VALUE_SERIALIZATION,
}
_UNROUTABLE = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_EXCEPTION,
}
_OUTAGE = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}


@dataclass(frozen=True)
class KafkaUrl:
    """``kafka://[user:password@]host:9092[,host2:9092][?option=value...]``, parsed."""

    config: dict[str, str]  # librdkafka settings: bootstrap.servers, SASL, pass-through options
    options: dict[str, str] = field(default_factory=dict)  # outboxkit's own (assign, ack_timeout)


def parse_url(url: str) -> KafkaUrl:
    """Split a ``kafka://`` URL into librdkafka settings and outboxkit options."""
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise ConfigurationError(f"not a Kafka URL: {redact_url(url)!r} (use kafka://host:9092)")
    # urlsplit cannot parse a host list (".port" fails on "a:1,b:2"), so split the netloc by hand.
    userinfo, _, hosts = parts.netloc.rpartition("@")
    servers = []
    for host in hosts.split(","):
        name, _, port = host.strip().rpartition(":") if ":" in host else (host.strip(), "", "9092")
        if not name or not port.isdigit():
            raise ConfigurationError(f"bad host:port {host!r} in Kafka URL {redact_url(url)!r}")
        servers.append(f"{name}:{port}")
    config = {"bootstrap.servers": ",".join(servers)}
    if userinfo:
        user, _, password = userinfo.partition(":")
        # Credentials in the URL mean SASL; TLS and the mechanism stay overridable by options.
        config.update(
            {
                "sasl.username": unquote(user),
                "sasl.password": unquote(password),
                "sasl.mechanism": "PLAIN",
                "security.protocol": "SASL_PLAINTEXT",
            }
        )
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (options if name in _OWN_OPTIONS else config)[name] = value
    return KafkaUrl(config, options)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


class _LibrdkafkaLog:
    """librdkafka logs every failed reconnect; outboxkit logs one line per outage instead, so its
    own chatter goes to DEBUG (``outboxkit.kafka.librdkafka``)."""

    _log = logging.getLogger("outboxkit.kafka.librdkafka")

    def log(self, level: int, msg: str, *args: object) -> None:
        self._log.debug(msg, *args)


class _Outage:
    """One warning when the brokers become unreachable and one when traffic flows again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None

    def down(self, reason: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s unreachable (%s); librdkafka reconnects in the background", self.what, reason)

    def up(self) -> None:
        if self.since is not None:
            log.warning("%s reachable again after %.1fs", self.what, time.monotonic() - self.since)
            self.since = None


def translate(err: KafkaError | BaseException, topic: str = "?") -> DeliveryError:
    """A librdkafka error (a delivery report's or an exception's) as an outboxkit error."""
    if isinstance(err, DeliveryError):
        return err
    if isinstance(err, KafkaException) and err.args and isinstance(err.args[0], KafkaError):
        err = err.args[0]
    if isinstance(err, BufferError):
        return TransientError(f"Kafka producer queue is full: {err}")
    if not isinstance(err, KafkaError):
        return TransientError(f"Kafka publish failed: {type(err).__name__}: {err}")
    code, reason = err.code(), err.str()
    if code in _PERMANENT:
        return PermanentError(f"Kafka refused the message: {reason} ({err.name()})")
    if code in _UNROUTABLE:
        return UnroutableError(f"Kafka topic {topic!r} is not available: {reason} ({err.name()}); create it with `outboxkit provision --broker URL --topic {topic}`")  # noqa: E501  # fmt: skip
    if code in _OUTAGE:
        return UnavailableError(f"Kafka is unreachable: {reason}")
    return TransientError(f"Kafka publish failed: {reason} ({err.name()})")


def kafka_headers(event: OutboxEvent, default_source: str) -> list[tuple[str, str | bytes | None]]:
    """Headers of the CloudEvents Kafka binding, binary mode: ``ce_<attribute>`` for every attribute
    but ``datacontenttype``, which is ``content-type``; user headers (``traceparent``...) as given."""
    headers: list[tuple[str, str | bytes | None]] = [(name, value.encode()) for name, value in event.headers.items()]
    if "traceparent" in event.headers:
        # The distributed tracing extension attribute, so CloudEvents SDKs see the trace context too.
        headers.append(("ce_traceparent", event.headers["traceparent"].encode()))
    for name, value in cloudevent_attributes(event, default_source).items():
        headers.append(("content-type" if name == "datacontenttype" else f"ce_{name}", value.encode()))
    return headers


class KafkaPublisher:
    """Idempotent Kafka producer. Topics must exist, or the brokers must auto-create them
    (``auto.create.topics.enable``); otherwise the publish fails with ``UnroutableError``.

    ``opts`` are librdkafka settings and override the URL's and outboxkit's defaults.
    """

    features = Features(native_dedupe=True, persistent=True, ordered=True)

    def __init__(
        self,
        url: str,
        *,
        source: str = "/outboxkit",
        max_in_flight: int = 4096,
        ack_timeout: float | None = None,
        **opts: Any,
    ) -> None:
        parsed = parse_url(url)
        self.url = url
        self.source = source
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout or float(parsed.options.get("ack_timeout", 5.0))
        self.config: dict[str, Any] = {
            "linger.ms": 5,
            # A failed delivery report after this long is the publish timeout (TransientError).
            "message.timeout.ms": int(self.ack_timeout * 1000),
            "socket.connection.setup.timeout.ms": 3000,
            "reconnect.backoff.max.ms": 1000,
            "partitioner": "murmur2_random",
            # Room for the whole in-flight window, so produce() never raises BufferError below it.
            "queue.buffering.max.messages": max(100_000, 2 * max_in_flight),
            **parsed.config,
            **{k: str(v) for k, v in opts.items()},
            # Not overridable: they are what G3/G4/G5 rest on.
            "enable.idempotence": True,
            "acks": "all",
            "error_cb": self._on_error,
            "logger": _LibrdkafkaLog(),
        }
        self._producer: confluent_kafka.Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._fatal: KafkaError | None = None
        self._last_delivery = time.monotonic()
        self._outage = _Outage(f"Kafka {redact_url(url)}")
        # Filled by the poll thread, drained on the loop (deque append/popleft are thread-safe).
        self._reports: deque[tuple[asyncio.Future[None], KafkaError | None, str]] = deque()

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        producer = confluent_kafka.Producer(self.config)
        try:
            # librdkafka would retry forever; a metadata request proves a broker answers now.
            await asyncio.to_thread(producer.list_topics, timeout=3)
        except KafkaException as exc:
            raise UnavailableError(f"Kafka at {redact_url(self.url)} is unavailable: {exc.args[0].str()}") from None
        self._producer = producer
        self._running = True
        self._thread = threading.Thread(target=self._poll_forever, name="outboxkit-kafka-poll", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # Flush first (delivery reports still arrive through the poll thread), then stop polling.
        await asyncio.to_thread(producer.flush, self.ack_timeout)
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None
        producer.purge()
        producer.flush(0)  # delivers the purge reports (failed futures) on this thread
        self._settle_batch()

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        if self._producer is None or self._loop is None:
            raise UnavailableError("Kafka publisher is not connected")
        if self._fatal is not None:
            await self._replace_producer()
        result: asyncio.Future[None] = self._loop.create_future()
        reports = self._reports
        topic = event.topic

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            # Runs on the poll thread: queue the outcome; the loop settles futures in batches.
            reports.append((result, err, topic))

        try:
            self._producer.produce(
                topic,
                value=event.payload,
                key=event.key,
                headers=kafka_headers(event, self.source),
                on_delivery=on_delivery,
            )
        except (KafkaException, BufferError) as exc:
            result.set_exception(translate(exc, topic))
        return result

    # -- delivery reports -----------------------------------------------------------------------

    def _poll_forever(self) -> None:
        producer = self._producer
        while self._running and producer is not None:
            producer.poll(0.05)
            if self._reports and self._loop is not None:
                # One wakeup of the event loop per poll, not one per message.
                try:
                    self._loop.call_soon_threadsafe(self._settle_batch)
                except RuntimeError:  # the loop is closed: nobody awaits these futures any more
                    return
            producer = self._producer or producer

    def _settle_batch(self) -> None:
        delivered = False
        reports = self._reports
        while reports:
            fut, err, topic = reports.popleft()
            if fut.done():
                continue
            if err is None:
                fut.set_result(None)
                delivered = True
            else:
                fut.set_exception(translate(err, topic))
                if err.code() == KafkaError._MSG_TIMED_OUT:
                    self._check_stuck()
        if delivered:
            self._last_delivery = time.monotonic()
            self._outage.up()

    def _check_stuck(self) -> None:
        # A broker that lost its producer state (a restarted in-memory broker, a wiped cluster)
        # answers UNKNOWN_PRODUCER_ID to every epoch librdkafka bumps by itself: messages time out
        # forever although the broker is up. Nothing delivered for several timeouts: start afresh
        # (a new producer gets a new producer id). During a plain outage this is merely harmless.
        stalled = time.monotonic() - self._last_delivery
        if self._fatal is None and stalled > 3 * self.ack_timeout:
            log.warning("Kafka: nothing delivered for %.0fs; starting a new producer", stalled)
            self._fatal = KafkaError(KafkaError._MSG_TIMED_OUT)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            # The idempotent producer's state is broken (e.g. the broker lost the producer id):
            # this producer can never send again, so the next publish builds a new one.
            log.error("Kafka producer fatal error: %s; starting a new producer", err.str())
            self._fatal = err
        elif err.code() in _OUTAGE:
            self._outage.down(err.str())
        else:
            log.debug("Kafka client error: %s", err.str())

    async def _replace_producer(self) -> None:
        old = self._producer
        self._producer = confluent_kafka.Producer(self.config)
        self._fatal = None
        self._last_delivery = time.monotonic()  # at most one replacement per 3 timeouts
        if old is not None:
            old.purge()
            await asyncio.to_thread(old.flush, 1)  # fails its pending futures (TransientError)
            self._settle_batch()


def ensure_topics(config: dict[str, Any], topics: Sequence[str], timeout: float = 10.0) -> None:
    """Create ``topics`` with the brokers' default partition count and replication factor, unless
    they exist (idempotent). Blocking."""
    admin_config = {k: v for k, v in config.items() if k in _ADMIN_KEYS or k.startswith(("sasl.", "ssl."))}
    admin = AdminClient(admin_config)
    # num_partitions=-1 / replication_factor=-1: the brokers' num.partitions / default.replication.factor.
    futures = admin.create_topics([NewTopic(t, -1, -1) for t in topics], operation_timeout=timeout)
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise UnroutableError(f"cannot create Kafka topic {topic!r}: {exc.args[0].str()}") from None


_ADMIN_KEYS = frozenset({"bootstrap.servers", "security.protocol", "client.id", "socket.connection.setup.timeout.ms"})


# -- consumer -----------------------------------------------------------------------------------


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def delivered_from(msg: Message) -> Delivered:
    """A consumed Kafka message with its CloudEvents attributes decoded."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = {name: _text(value) for name, value in pairs}
    key = msg.key()
    return Delivered(
        event_id=headers.get("ce_id", ""),
        topic=msg.topic() or "",
        key=headers.get("ce_subject") or (_text(key) if key is not None else None),
        payload=msg.value() or b"",
        headers=headers,
    )


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
                raise translate(exc, topic) from None
            state.committed = position

    async def retry(self, incoming: Incoming, delay: float) -> None:
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


# -- helpers for tests, the demo and the lab --------------------------------------------------------


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


__all__ = [
    "KafkaConsumer",
    "KafkaPublisher",
    "KafkaUrl",
    "delivered_from",
    "ensure_topics",
    "kafka_headers",
    "parse_url",
    "read_topics",
    "translate",
]
