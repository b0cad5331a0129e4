"""The relay's HTTP endpoints, scraped with a real HTTP client over a real socket.

The metrics are fed by hand: these tests pin the web layer (names, values, buckets, status codes,
bind address), not the relay, so they need no broker. One test probes a real SQLite outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

import outboxkit
from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import PermanentError, TransientError, UnavailableError, UnroutableError
from outboxkit.stores.registry import store_for
from outboxkit.stores.sqlite import sqlite_path
from outboxkit.web import (
    Backlog,
    MetricsServer,
    Readiness,
    RelayMetrics,
    StoreBacklogProbe,
    failure_kind,
    lag_seconds,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _get(url: str, *, method: str = "GET", accept: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body); blocking, so tests call it through asyncio.to_thread."""
    request = urllib.request.Request(url, method=method)
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def get(server: MetricsServer, path: str, **kwargs: str) -> tuple[int, str, str]:
    # The server runs on this test's loop: a blocking client here would deadlock it.
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}{path}", **kwargs)


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a text exposition."""
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def event(seq: int, topic: str = "orders.created", created_at: datetime | None = None) -> OutboxEvent:
    return OutboxEvent(seq=seq, id=f"id-{seq}", topic=topic, payload=b"{}", created_at=created_at)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(clock: FakeClock) -> RelayMetrics:
    return RelayMetrics(readiness=Readiness(max_age=30.0, clock=clock), clock=clock)


@pytest.fixture
async def server(metrics: RelayMetrics) -> AsyncIterator[MetricsServer]:
    async with MetricsServer(metrics, port=0) as srv:
        yield srv


async def test_default_bind_address_is_loopback(metrics: RelayMetrics, server: MetricsServer) -> None:
    assert MetricsServer(metrics).host == "127.0.0.1"
    assert server.host == "127.0.0.1"
    assert server._server is not None
    assert {sock.getsockname()[0] for sock in server._server.sockets} == {"127.0.0.1"}


async def test_non_loopback_bind_is_logged_as_a_warning(
    metrics: RelayMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="outboxkit.web"):
        async with MetricsServer(metrics, host="0.0.0.0", port=0):
            pass
    assert any(r.levelno == logging.WARNING and "0.0.0.0" in r.getMessage() for r in caplog.records)


async def test_loopback_bind_logs_no_warning(metrics: RelayMetrics, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="outboxkit.web"):
        async with MetricsServer(metrics, port=0):
            pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_counters_by_label(metrics: RelayMetrics, server: MetricsServer) -> None:
    for seq in range(3):
        metrics.published(event(seq), latency_s=0.002, lag_s=0.5)
    metrics.published(event(9, topic="invoices.paid"), latency_s=0.002, lag_s=0.5)
    metrics.failed("permanent")
    metrics.failed("transient")
    metrics.failed("transient")
    metrics.dead_lettered()
    metrics.handover(3)
    metrics.fenced(2)
    metrics.set_leases(16)

    status, content_type, body = await get(server, "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain")
    values = samples(body)
    assert values[("outboxkit_relay_events_published_total", (("topic", "orders.created"),))] == 3
    assert values[("outboxkit_relay_events_published_total", (("topic", "invoices.paid"),))] == 1
    assert values[("outboxkit_relay_publish_failures_total", (("kind", "permanent"),))] == 1
    assert values[("outboxkit_relay_publish_failures_total", (("kind", "transient"),))] == 2
    # Present at zero before any such failure, so "increase(...) > 0" alerts see the first one.
    assert values[("outboxkit_relay_publish_failures_total", (("kind", "unroutable"),))] == 0
    assert values[("outboxkit_relay_dead_letters_total", ())] == 1
    assert values[("outboxkit_relay_lease_handovers_total", ())] == 3
    assert values[("outboxkit_relay_fenced_total", ())] == 2
    assert values[("outboxkit_relay_leased_buckets", ())] == 16
    assert values[("outboxkit_relay_up", ())] == 1


async def test_histogram_buckets(metrics: RelayMetrics, server: MetricsServer) -> None:
    metrics.published(event(1), latency_s=0.0003, lag_s=0.02)
    metrics.published(event(2), latency_s=0.004, lag_s=0.7)
    metrics.published(event(3), latency_s=3.0, lag_s=120.0)

    _, _, body = await get(server, "/metrics")
    values = samples(body)

    def bucket(name: str, le: str) -> float:
        return values[(f"{name}_bucket", (("le", le),))]

    latency = "outboxkit_relay_publish_latency_seconds"
    assert bucket(latency, "0.0005") == 1
    assert bucket(latency, "0.005") == 2
    assert bucket(latency, "2.5") == 2
    assert bucket(latency, "5.0") == 3
    assert bucket(latency, "+Inf") == 3
    assert values[(f"{latency}_count", ())] == 3
    assert values[(f"{latency}_sum", ())] == pytest.approx(3.0043)

    lag = "outboxkit_relay_commit_to_publish_seconds"
    assert bucket(lag, "0.025") == 1
    assert bucket(lag, "1.0") == 2
    assert bucket(lag, "60.0") == 2
    assert bucket(lag, "300.0") == 3
    assert bucket(lag, "3600.0") == 3


async def test_lag_defaults_to_age_of_created_at(metrics: RelayMetrics, server: MetricsServer) -> None:
    metrics.published(event(1, created_at=datetime.now(UTC) - timedelta(seconds=45)), latency_s=0.001)
    metrics.published(event(2), latency_s=0.001)  # no created_at: no lag sample rather than a made-up one

    _, _, body = await get(server, "/metrics")
    values = samples(body)

    assert values[("outboxkit_relay_commit_to_publish_seconds_count", ())] == 1
    assert values[("outboxkit_relay_commit_to_publish_seconds_bucket", (("le", "30.0"),))] == 0
    assert values[("outboxkit_relay_commit_to_publish_seconds_bucket", (("le", "60.0"),))] == 1


def test_lag_is_never_negative() -> None:
    future = datetime.now(UTC) + timedelta(seconds=5)  # database clock ahead of ours
    assert lag_seconds(event(1, created_at=future)) == 0.0
    assert lag_seconds(event(1)) is None
    naive_utc = datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert lag_seconds(event(1, created_at=naive_utc), now=naive_utc.timestamp() + 2.5) == 2.5


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (UnroutableError("no stream"), "unroutable"),  # a TransientError subclass: checked first
        (PermanentError("too big"), "permanent"),
        (TransientError("timeout"), "transient"),
        (UnavailableError("down"), "transient"),
        (OSError("reset"), "transient"),
    ],
)
def test_failure_kind(error: BaseException, kind: str) -> None:
    assert failure_kind(error) == kind


async def test_topic_label_cardinality_is_capped(clock: FakeClock) -> None:
    metrics = RelayMetrics(max_topics=2, clock=clock)
    for i in range(5):
        metrics.published(event(i, topic=f"tenant{i}.created"), latency_s=0.001, lag_s=0.1)
    metrics.published(event(9, topic="tenant0.created"), latency_s=0.001, lag_s=0.1)

    values = samples(metrics.render()[0].decode())
    published = {k[1][0][1]: v for k, v in values.items() if k[0] == "outboxkit_relay_events_published_total"}

    assert published == {"tenant0.created": 2, "tenant1.created": 1, "_other": 3}


async def test_backlog_is_probed_at_most_once_per_ttl(clock: FakeClock) -> None:
    calls = 0

    async def probe() -> Backlog:
        nonlocal calls
        calls += 1
        return Backlog(pending=40 + calls, oldest_age_seconds=75.5)

    metrics = RelayMetrics(probe, backlog_ttl=5.0, clock=clock)
    async with MetricsServer(metrics, port=0) as server:
        bodies = await asyncio.gather(*(get(server, "/metrics") for _ in range(4)))
        clock.now += 1.0
        _, _, body = await get(server, "/metrics")
        assert calls == 1  # concurrent and repeated scrapes share one database query
        values = samples(body)
        assert values[("outboxkit_relay_backlog_events", ())] == 41
        assert values[("outboxkit_relay_oldest_pending_age_seconds", ())] == 75.5
        assert all(status == 200 for status, _, _ in bodies)

        clock.now += 5.0
        _, _, body = await get(server, "/metrics")
        assert calls == 2
        assert samples(body)[("outboxkit_relay_backlog_events", ())] == 42


async def test_backlog_absent_when_probe_fails_or_hangs(clock: FakeClock) -> None:
    async def failing() -> Backlog:
        raise UnavailableError("database down")

    async def hanging() -> Backlog:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    for probe in (failing, hanging):
        metrics = RelayMetrics(probe, probe_timeout=0.2, clock=clock)
        async with MetricsServer(metrics, port=0) as server:
            status, _, body = await asyncio.wait_for(get(server, "/metrics"), 5)
        assert status == 200  # the rest of the metrics still reach Prometheus
        names = {name for name, _ in samples(body)}
        assert "outboxkit_relay_backlog_events" not in names
        assert "outboxkit_relay_up" in names


async def test_stale_backlog_disappears(clock: FakeClock) -> None:
    fail = False

    async def probe() -> Backlog:
        if fail:
            raise UnavailableError("database down")
        return Backlog(pending=0)

    metrics = RelayMetrics(probe, backlog_ttl=5.0, clock=clock)
    await metrics.refresh_backlog()
    names = {name for name, _ in samples(metrics.render()[0].decode())}
    # Nothing pending: the oldest age is 0, not missing.
    assert {"outboxkit_relay_backlog_events", "outboxkit_relay_oldest_pending_age_seconds"} <= names

    fail = True
    clock.now += 16.0  # more than three TTLs without a successful probe
    await metrics.refresh_backlog()
    names = {name for name, _ in samples(metrics.render()[0].decode())}
    assert "outboxkit_relay_backlog_events" not in names


async def test_oldest_age_left_out_when_the_store_cannot_tell(clock: FakeClock) -> None:
    async def probe() -> Backlog:
        return Backlog(pending=3, oldest_age_seconds=None)

    metrics = RelayMetrics(probe, clock=clock)
    await metrics.refresh_backlog()
    values = samples(metrics.render()[0].decode())
    assert values[("outboxkit_relay_backlog_events", ())] == 3
    assert ("outboxkit_relay_oldest_pending_age_seconds", ()) not in values


async def test_healthz(server: MetricsServer) -> None:
    status, content_type, body = await get(server, "/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"status": "alive"}


async def test_readyz_follows_round_trips(metrics: RelayMetrics, server: MetricsServer, clock: FakeClock) -> None:
    status, content_type, body = await get(server, "/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body)["reason"] == "no successful database round trip yet"

    metrics.db_ok()
    status, _, body = await get(server, "/readyz")
    assert status == 503
    assert "broker" in json.loads(body)["reason"]

    metrics.broker_ok()
    status, _, body = await get(server, "/readyz")
    assert status == 200
    assert json.loads(body)["status"] == "ready"
    assert json.loads(body)["leased_buckets"] == 0
    assert samples((await get(server, "/metrics"))[2])[("outboxkit_relay_ready", ())] == 1

    clock.now += 20.0
    metrics.published(event(1), latency_s=0.001, lag_s=0.1)  # a confirmation refreshes the broker side
    clock.now += 20.0
    status, _, body = await get(server, "/readyz")
    doc = json.loads(body)
    assert status == 503
    assert doc["reason"].startswith("no successful database round trip for 40.0s")
    assert doc["broker_age_seconds"] == 20.0
    assert samples((await get(server, "/metrics"))[2])[("outboxkit_relay_ready", ())] == 0


async def test_head_unknown_path_and_method(server: MetricsServer) -> None:
    status, _, body = await get(server, "/healthz", method="HEAD")
    assert (status, body) == (200, "")
    assert (await get(server, "/metrics?debug=1"))[0] == 200  # query strings are ignored
    assert (await get(server, "/admin"))[0] == 404
    assert (await get(server, "/metrics", method="POST"))[0] == 405


async def test_garbage_and_oversized_requests_do_not_break_the_server(server: MetricsServer) -> None:
    for payload in (b"hello\r\n\r\n", b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"GET"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(payload)
        writer.write_eof()
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
    assert (await get(server, "/healthz"))[0] == 200


async def test_openmetrics_on_request(metrics: RelayMetrics, server: MetricsServer) -> None:
    metrics.published(event(1), latency_s=0.001, lag_s=0.1)
    status, content_type, body = await get(server, "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


async def test_registries_are_independent(clock: FakeClock) -> None:
    a, b = RelayMetrics(clock=clock), RelayMetrics(clock=clock)
    a.dead_lettered()
    assert samples(a.render()[0].decode())[("outboxkit_relay_dead_letters_total", ())] == 1
    assert samples(b.render()[0].decode())[("outboxkit_relay_dead_letters_total", ())] == 0


async def test_store_probe_counts_a_real_sqlite_outbox(sqlite_url: str) -> None:
    conn = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN")
        for i in range(3):
            outboxkit.emit(conn, "orders.created", {"id": i})
        conn.execute("COMMIT")
    finally:
        conn.close()

    probe = StoreBacklogProbe(lambda: store_for(sqlite_url, None))
    try:
        backlog = await probe()
        assert backlog.pending == 3
        metrics = RelayMetrics(probe)
        async with MetricsServer(metrics, port=0) as server:
            _, _, body = await get(server, "/metrics")
        assert samples(body)[("outboxkit_relay_backlog_events", ())] == 3
    finally:
        await probe.aclose()
