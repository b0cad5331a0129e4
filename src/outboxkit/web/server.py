"""A tiny HTTP server for a relay: ``/metrics``, ``/healthz``, ``/readyz``.

It runs on the relay's own event loop (asyncio streams, no framework, no thread), so probing the
backlog can await the store and nothing needs a lock against the relay. HTTP/1.1 with one request
per connection is all Prometheus and Kubernetes probes need.

Bound to 127.0.0.1 unless told otherwise: metrics reveal topic names and traffic, so exposing them
on every interface is an explicit choice and is logged as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, runtime_checkable

from outboxkit.relay.loop import Relay, RelayStats
from outboxkit.relay.process import serve
from outboxkit.relay.tail import TailRelay
from outboxkit.stores.base import OutboxStore
from outboxkit.web.metrics import Backlog, RelayMetrics

log = logging.getLogger("outboxkit.web")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464  # OpenTelemetry's Prometheus exporter default; scrape configs often expect it

_MAX_HEAD = 8192  # request line + headers; anything bigger is not a probe
_READ_TIMEOUT = 5.0  # a client that trickles its request must not hold a connection forever
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


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


class MetricsServer:
    """Serves one :class:`RelayMetrics`. ``port=0`` lets the OS choose (tests); read ``.port``.

    >>> async def main() -> None:
    ...     async with MetricsServer(RelayMetrics(), port=0) as server:
    ...         print(server.port > 0)
    """

    def __init__(self, metrics: RelayMetrics, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        self.metrics = metrics
        self.host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if not is_loopback(self.host):
            log.warning(
                "serving /metrics and health checks on %s:%s, reachable from other machines; "
                "keep it behind a firewall or network policy",
                self.host,
                self._requested_port,
            )
        self._server = await asyncio.start_server(self._handle, self.host, self._requested_port, limit=_MAX_HEAD)
        log.info("observability endpoints on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- HTTP --------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(_READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                await self._respond(writer, 400, b"request too large\n", "text/plain; charset=utf-8")
                return
            except (TimeoutError, asyncio.IncompleteReadError):
                return
            method, path, headers = _parse_head(head)
            status, body, content_type = await self._route(method, path, headers)
            await self._respond(writer, status, b"" if method == "HEAD" else body, content_type, len(body))
        except ConnectionError:
            pass  # the client went away; nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _route(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        if not method:
            return 400, b"bad request\n", "text/plain; charset=utf-8"
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

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, length: int | None = None
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """``(method, path without query, lower-cased headers)``; method is "" when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "", "", {}
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1].split("?", 1)[0], headers


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
) -> RelayStats:
    """``relay.process.serve`` with the HTTP endpoints alongside; ``port=0`` means no HTTP at all.

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

    server = MetricsServer(metrics, host=host, port=port) if port else None
    try:
        if server is not None:
            await server.start()
        return await serve(relay, db=db, broker=broker, table=table, summary_interval=summary_interval, backlog=backlog)
    finally:
        if server is not None:
            await server.close()
        if probe is not None:
            await probe.aclose()
