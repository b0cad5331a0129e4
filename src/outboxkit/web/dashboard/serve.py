"""``outboxkit dashboard``: the dashboard on a port of its own, without a relay.

The same :class:`~outboxkit.web.dashboard.app.Dashboard` the relay mounts next to ``/metrics``
(``outboxkit relay --dashboard``), served by the same small asyncio HTTP code (``web/http.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import TracebackType

from outboxkit.core.logfmt import LIFE_LOGGER
from outboxkit.web.dashboard.app import PREFIX, Dashboard
from outboxkit.web.http import MAX_HEAD, Request, Response, serve_connection, text

# The start line is a life line (shown at the default level, silenced by --quiet): a server that
# says nothing leaves its operator guessing the address.
life = logging.getLogger(LIFE_LOGGER)

DEFAULT_DASHBOARD_PORT = 9465  # next to the relay's metrics port (9464)


class DashboardServer:
    """Serves one :class:`Dashboard`; ``/`` redirects to it. ``port=0`` lets the OS choose (tests)."""

    def __init__(self, dashboard: Dashboard, *, host: str = "127.0.0.1", port: int = DEFAULT_DASHBOARD_PORT) -> None:
        self.dashboard = dashboard
        self.host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._requested_port, limit=MAX_HEAD)
        life.info("dashboard on http://%s:%d%s/", _url_host(self.host), self.port, PREFIX)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> DashboardServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, self._dispatch)

    async def _dispatch(self, request: Request) -> Response:
        if self.dashboard.owns(request.path):
            return await self.dashboard.handle(request)
        if request.path == "/" and request.method in ("GET", "HEAD"):
            return Response(303, b"", headers=[("Location", f"{PREFIX}/")])
        return text(404, f"not found: the dashboard is at {PREFIX}/")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_dashboard(dashboard: Dashboard, *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with DashboardServer(dashboard, host=host, port=port):
        await stop.wait()
