"""A tiny HTTP server for a relay: ``/metrics``, ``/healthz``, ``/readyz``.

It runs on the relay's own event loop (asyncio streams, no framework, no thread), so probing the
backlog can await the store and nothing needs a lock against the relay. HTTP/1.1 with one request
per connection is all Prometheus and Kubernetes probes need.

Bound to 127.0.0.1 unless told otherwise: metrics reveal topic names and traffic, so exposing them
on every interface is an explicit choice and is logged as one.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from outboxkit.relay.loop import Relay, RelayStats
from outboxkit.relay.process import serve
from outboxkit.relay.tail import TailRelay
from outboxkit.stores.base import OutboxStore
from outboxkit.web.http import Listener, Request, Response
from outboxkit.web.metrics import Backlog, RelayMetrics

log = logging.getLogger("outboxkit.web")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464  # OpenTelemetry's Prometheus exporter default; scrape configs often expect it


class DashboardRoutes(Protocol):
    """What the server asks of a dashboard mounted next to ``/metrics`` (``web/dashboard``)."""

    def owns(self, path: str) -> bool: ...

    async def handle(self, request: Request) -> Response: ...


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach. Unknown host names count as not loopback,
    so the warning errs on the side of being shown."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@runtime_checkable
class _KnowsOldest(Protocol):
    async def oldest_pending_age(self) -> float | None: ...


class StoreBacklogProbe:
    """Backlog probe on a store of its own, opened on first use.

    A separate store because ``OutboxStore`` serves one task at a time and the relay's store is
    busy relaying; a scrape must never interleave with a claim or a mark. The age of the oldest
    row is asked only of stores that offer ``oldest_pending_age()``; others report the count only.
    """

    def __init__(self, store_factory: Callable[[], OutboxStore]) -> None:
        self._factory = store_factory
        self._store: OutboxStore | None = None

    async def __call__(self) -> Backlog:
        if self._store is None:
            store = self._factory()
            try:
                await store.open()
            except BaseException:
                await store.close()
                raise
            self._store = store
        try:
            pending = await self._store.pending_count()
            age = await self._store.oldest_pending_age() if isinstance(self._store, _KnowsOldest) else None
        except BaseException:
            # Start over with a fresh connection next time, as the relay itself does.
            await self.aclose()
            raise
        return Backlog(pending, age)

    async def aclose(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()


class MetricsServer(Listener):
    """Serves one :class:`RelayMetrics`. ``port=0`` lets the OS choose (tests); read ``.port``.

    >>> async def main() -> None:
    ...     async with MetricsServer(RelayMetrics(), port=0) as server:
    ...         print(server.port > 0)
    """

    def __init__(
        self,
        metrics: RelayMetrics,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        dashboard: DashboardRoutes | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.metrics = metrics
        self.dashboard = dashboard

    async def start(self) -> None:
        if not is_loopback(self.host):
            log.warning(
                "serving /metrics and health checks on %s:%s, reachable from other machines; "
                "keep it behind a firewall or network policy",
                self.host,
                self._requested_port,
            )
        await super().start()
        log.info("observability endpoints on http://%s:%d/metrics", self.host, self.port)

    # -- HTTP --------------------------------------------------------------------------------------
    async def dispatch(self, request: Request) -> Response:
        if self.dashboard is not None and self.dashboard.owns(request.path):
            return await self.dashboard.handle(request)
        status, body, content_type = await self._route(request.method, request.path, request.headers)
        return Response(status, body, content_type)

    async def _route(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        if path not in ("/metrics", "/healthz", "/readyz"):
            return 404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", "text/plain; charset=utf-8"
        if path == "/healthz":
            # Alive means this loop answers; a wedged event loop cannot, which is the point.
            return 200, b'{"status":"alive"}\n', "application/json"
        if path == "/readyz":
            ready, reason = self.metrics.readiness.check()
            doc = {
                "status": "ready" if ready else "not ready",
                "reason": reason,
                "leased_buckets": self.metrics.leases,
                **self.metrics.readiness.ages(),
            }
            return (200 if ready else 503), (json.dumps(doc) + "\n").encode(), "application/json"
        await self.metrics.refresh_backlog()
        body, content_type = self.metrics.render(headers.get("accept"))
        return 200, body, content_type


async def serve_relay(
    relay: Relay | TailRelay,
    metrics: RelayMetrics,
    *,
    db: str,
    broker: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    table: str | None = None,
    summary_interval: float = 60.0,
    dashboard: DashboardRoutes | None = None,
) -> RelayStats:
    """``relay.process.serve`` with the HTTP endpoints alongside; ``port=0`` means no HTTP at all.

    ``dashboard`` (``web/dashboard``) is served under ``/dashboard`` on the same port.

    The backlog probe (a store connection of its own, opened on first use) serves both the metrics
    and the periodic summary line.

    Lives here rather than in ``relay/process.py`` because the relay floor must not import
    ``web``: the relay only knows the observer it was given (``metrics``)."""
    probe: StoreBacklogProbe | None = None
    if metrics.probe is None:
        probe = StoreBacklogProbe(relay.store_factory)
        if port:
            metrics.probe = probe
    counter = probe or metrics.probe

    async def backlog() -> int | None:
        return None if counter is None else (await counter()).pending

    server = MetricsServer(metrics, host=host, port=port, dashboard=dashboard) if port else None
    try:
        if server is not None:
            await server.start()
        return await serve(relay, db=db, broker=broker, table=table, summary_interval=summary_interval, backlog=backlog)
    finally:
        if server is not None:
            await server.close()
        if probe is not None:
            await probe.aclose()
