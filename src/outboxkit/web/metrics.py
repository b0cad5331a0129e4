"""Prometheus metrics and readiness of one relay.

The relay calls :class:`RelayMetrics` methods as things happen (cheap, no I/O); the HTTP server in
``outboxkit.web.server`` renders them. Two values cannot be counted as they happen — how many rows
wait and how old the oldest one is — so they come from a probe that queries the database, run at
most once per ``backlog_ttl`` seconds however often Prometheus scrapes.

Every relay gets its own ``CollectorRegistry``: two relays in one process (or two tests in one
worker) never share or collide on metric state.

>>> metrics = RelayMetrics()
>>> metrics.failed("transient")
>>> b"outboxkit_relay_publish_failures_total" in metrics.render()[0]
True
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import PermanentError, UnroutableError

log = logging.getLogger("outboxkit.web")

FailureKind = Literal["transient", "unroutable", "permanent"]
FAILURE_KINDS: tuple[FailureKind, ...] = ("transient", "unroutable", "permanent")

#: Send -> broker confirmation. A local broker confirms in well under a millisecond, a remote
#: cluster with fsync in tens of milliseconds; the top buckets catch a broker that stalls.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Commit -> confirmation. Seconds to an hour: an outage or a backlog drains at this scale.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

#: Topics are chosen by applications and may embed a tenant or an id; past this many distinct
#: topics the rest share one label value, so a topic explosion cannot blow up Prometheus.
DEFAULT_MAX_TOPICS = 200
OTHER_TOPIC = "_other"


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in the outbox: rows neither delivered nor dead, and the age of the oldest."""

    pending: int
    oldest_age_seconds: float | None = None  # None: nothing pending, or the store cannot tell


BacklogProbe = Callable[[], Awaitable[Backlog]]


def failure_kind(error: BaseException) -> FailureKind:
    """The label for a failed publish. ``UnroutableError`` is a ``TransientError`` subclass, so it
    is tested first; anything that is not ours counts as transient, as the relay treats it."""
    if isinstance(error, UnroutableError):
        return "unroutable"
    if isinstance(error, PermanentError):
        return "permanent"
    return "transient"


def lag_seconds(event: OutboxEvent, now: float | None = None) -> float | None:
    """Seconds from the row's commit-time stamp to ``now`` (wall clock), never negative.

    ``created_at`` comes from the database clock and ``now`` from this host's: skew between them
    would show as negative lag, which is clamped to 0 rather than recorded as a lie."""
    if event.created_at is None:
        return None
    wall = time.time() if now is None else now
    return max(0.0, wall - event.created_at.timestamp())


class Readiness:
    """Whether the relay is doing its job, judged by how recently it heard from each side.

    * the database: any successful round trip (fetch, mark, lease renewal) — the relay polls at least
      every ``poll_interval``, so a healthy relay refreshes this every second or so;
    * the broker: a confirmation, or a fetch that found nothing to send. An idle relay has nothing
      to confirm, and calling that "not ready" would page someone about a quiet night.

    ``clock`` is injectable so tests need not sleep.
    """

    def __init__(self, max_age: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self.last_db: float | None = None
        self.last_broker: float | None = None

    def db_ok(self) -> None:
        self.last_db = self._clock()

    def broker_ok(self) -> None:
        self.last_broker = self._clock()

    def check(self) -> tuple[bool, str]:
        """``(ready, reason)``; the reason is short and safe to show to anyone who can reach the port."""
        now = self._clock()
        for side, last in (("database", self.last_db), ("broker", self.last_broker)):
            if last is None:
                return False, f"no successful {side} round trip yet"
            age = now - last
            if age > self.max_age:
                return False, f"no successful {side} round trip for {age:.1f}s (limit {self.max_age:g}s)"
        return True, "ok"

    def ages(self) -> dict[str, float | None]:
        now = self._clock()
        return {
            "database_age_seconds": None if self.last_db is None else round(now - self.last_db, 3),
            "broker_age_seconds": None if self.last_broker is None else round(now - self.last_broker, 3),
        }


class RelayMetrics:
    """The metrics of one relay, on a registry of its own (``self.registry``).

    Methods are called from the relay's event loop and cost a dict lookup and a lock each: fine at
    tens of thousands of events per second.
    """

    def __init__(
        self,
        backlog: BacklogProbe | None = None,
        *,
        backlog_ttl: float = 5.0,
        probe_timeout: float = 2.0,
        readiness: Readiness | None = None,
        max_topics: int = DEFAULT_MAX_TOPICS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.readiness = readiness or Readiness()
        self.probe = backlog
        self._ttl = backlog_ttl
        self._probe_timeout = probe_timeout
        self._clock = clock
        self._max_topics = max_topics
        self._backlog: Backlog | None = None
        self._backlog_at: float | None = None
        self._probe_lock = asyncio.Lock()
        self._leases = 0
        # Log tailing (``relay --capture wal``): () -> (bytes, seconds) the slot is behind (H4).
        self.slot_lag: Callable[[], tuple[int | None, float | None]] | None = None

        r = self.registry
        self._published = Counter(
            "outboxkit_relay_events_published", "Events confirmed by the broker, by topic.", ["topic"], registry=r
        )
        self._failures = Counter(
            "outboxkit_relay_publish_failures",
            "Failed publish attempts, by kind: transient (retried), unroutable (topic paused), permanent.",
            ["kind"],
            registry=r,
        )
        self._dead = Counter("outboxkit_relay_dead_letters", "Events dead-lettered (never retried).", registry=r)
        self._aside = Counter(
            "outboxkit_relay_set_aside",
            "Inputs whose dead letter could not be stored either: skipped in memory by this process (H13).",
            registry=r,
        )
        self._handovers = Counter(
            "outboxkit_relay_lease_handovers",
            "Buckets this relay took over from an expired or released lease of another relay.",
            registry=r,
        )
        self._fenced = Counter(
            "outboxkit_relay_fenced",
            "Confirmed events not marked because the lease was lost meanwhile (the new owner re-sends them).",
            registry=r,
        )
        self._latency = Histogram(
            "outboxkit_relay_publish_latency_seconds",
            "Time from handing an event to the broker client to the broker's confirmation.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._lag = Histogram(
            "outboxkit_relay_commit_to_publish_seconds",
            "Time from the row's created_at (database clock) to the broker's confirmation.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        # Zero-valued series from the start: rate() and "> 0" alerts need a series to exist
        # before the first failure, or the first failure is invisible to them.
        for kind in FAILURE_KINDS:
            self._failures.labels(kind)
        self._topic_children: dict[str, Counter] = {}
        r.register(_LiveCollector(self))

    # -- called by the relay -----------------------------------------------------------------------
    def published(self, event: OutboxEvent, latency_s: float, lag_s: float | None = None) -> None:
        """One event confirmed by the broker. ``lag_s`` defaults to :func:`lag_seconds` of now."""
        child = self._topic_children.get(event.topic)
        if child is None:
            label = event.topic if len(self._topic_children) < self._max_topics else OTHER_TOPIC
            child = self._published.labels(label)
            if label != OTHER_TOPIC:
                self._topic_children[event.topic] = child
        child.inc()
        self._latency.observe(max(0.0, latency_s))
        lag = lag_seconds(event) if lag_s is None else lag_s
        if lag is not None:
            self._lag.observe(lag)
        self.readiness.broker_ok()

    def failed(self, kind: FailureKind) -> None:
        self._failures.labels(kind).inc()

    def dead_lettered(self) -> None:
        self._dead.inc()

    def set_aside(self) -> None:
        self._aside.inc()

    def handover(self, buckets: int = 1) -> None:
        """``buckets`` leases taken over from other relays (expired or released)."""
        self._handovers.inc(buckets)

    def fenced(self, events: int) -> None:
        """``events`` confirmations that could not be marked: the lease ended first (H6)."""
        self._fenced.inc(events)

    def set_leases(self, buckets: int) -> None:
        """How many buckets this relay holds now; 0 means standing by behind other relays."""
        self._leases = buckets

    def db_ok(self) -> None:
        self.readiness.db_ok()

    def broker_ok(self) -> None:
        self.readiness.broker_ok()

    # -- read by the HTTP server -------------------------------------------------------------------
    @property
    def leases(self) -> int:
        return self._leases

    @property
    def backlog(self) -> Backlog | None:
        """The last probed backlog, or None when it is unknown or older than three TTLs."""
        if self._backlog is None or self._backlog_at is None:
            return None
        if self._clock() - self._backlog_at > 3 * self._ttl:
            return None  # a stale number looks healthy; better absent, which alerts can see
        return self._backlog

    async def refresh_backlog(self) -> None:
        """Run the probe unless its last answer is younger than ``backlog_ttl``.

        Concurrent scrapes share one probe (the lock), and a slow database cannot hang a scrape
        for longer than ``probe_timeout``."""
        if self.probe is None:
            return
        async with self._probe_lock:
            if self._backlog_at is not None and self._clock() - self._backlog_at < self._ttl:
                return
            try:
                async with asyncio.timeout(self._probe_timeout):
                    value = await self.probe()
            except Exception as exc:
                log.debug("backlog probe failed: %s", exc)
                return
            self._backlog, self._backlog_at = value, self._clock()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type; OpenMetrics when ``accept`` asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _LiveCollector(Collector):
    """Values read at scrape time rather than counted: backlog, readiness, leases."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield GaugeMetricFamily("outboxkit_relay_up", "1 while the relay process serves metrics.", value=1)
        ready, _ = m.readiness.check()
        yield GaugeMetricFamily(
            "outboxkit_relay_ready", "1 when database and broker round trips are recent (see /readyz).", value=ready
        )
        yield GaugeMetricFamily(
            "outboxkit_relay_leased_buckets",
            "Buckets (key partitions) this relay holds; 0 while standing by behind other relays.",
            value=m.leases,
        )
        if m.slot_lag is not None:
            lag_bytes, lag_s = m.slot_lag()
            if lag_bytes is not None:
                yield GaugeMetricFamily(
                    "outboxkit_relay_slot_lag_bytes",
                    "WAL between the server's position and the slot's confirmed one (retained, H4).",
                    value=lag_bytes,
                )
            if lag_s is not None:
                yield GaugeMetricFamily(
                    "outboxkit_relay_slot_lag_seconds",
                    "Age of the last transaction the log-tailing relay finished, while it is behind (0 caught up).",
                    value=lag_s,
                )
        backlog = m.backlog
        # Absent rather than stale when the probe fails: absent() alerts can see that, a frozen
        # number cannot be told from a healthy one.
        if backlog is not None:
            yield GaugeMetricFamily(
                "outboxkit_relay_backlog_events",
                "Outbox rows neither delivered nor dead (probed at most every few seconds).",
                value=backlog.pending,
            )
            age = backlog.oldest_age_seconds
            if backlog.pending == 0:
                age = 0.0
            # A store that cannot tell the age leaves the series out rather than claiming 0.
            if age is not None and not math.isnan(age):
                yield GaugeMetricFamily(
                    "outboxkit_relay_oldest_pending_age_seconds",
                    "Age of the oldest pending row (0 when none is pending).",
                    value=max(0.0, age),
                )
