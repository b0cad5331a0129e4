"""The idempotent Kafka producer: delivery reports turned into asyncio futures, replaced after a fatal error."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Message

from outboxkit.brokers._errors import Outage
from outboxkit.brokers.base import Features
from outboxkit.brokers.kafka.client import _LibrdkafkaLog, parse_url
from outboxkit.brokers.kafka.errors import _OUTAGE, _REBUILD, translate
from outboxkit.brokers.kafka.wire import kafka_headers
from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.urls import redact_url
from outboxkit.errors import UnavailableError

log = logging.getLogger("outboxkit.kafka")


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
        self._outage = Outage(log, f"Kafka {redact_url(url)}", recovery="librdkafka reconnects in the background")
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
        except Exception as exc:  # KafkaException, BufferError, RuntimeError (closed), TypeError, ...
            result.set_exception(translate(exc, topic, self._outage))
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
                fut.set_exception(translate(err, topic, self._outage))
                if err.code() == KafkaError._MSG_TIMED_OUT:
                    self._check_stuck()
                elif self._fatal is None and (err.fatal() or err.code() in _REBUILD):
                    log.error("Kafka producer cannot send any more (%s); starting a new producer", err.str())
                    self._fatal = err
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
            await asyncio.to_thread(old.flush, 1)  # fails its pending futures (purged: UnavailableError)
            self._settle_batch()
