"""``outboxkit dashboard``: the dashboard on a port of its own, without a relay.

The same :class:`~outboxkit.web.dashboard.app.Dashboard` the relay mounts next to ``/metrics``
(``outboxkit relay --dashboard``), served by the same small asyncio HTTP code (``web/http.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from outboxkit.core.logfmt import LIFE_LOGGER
from outboxkit.web.dashboard.app import PREFIX, Dashboard
from outboxkit.web.http import Listener, Request, Response, text

# The start line is a life line (shown at the default level, silenced by --quiet): a server that
# says nothing leaves its operator guessing the address.
life = logging.getLogger(LIFE_LOGGER)

DEFAULT_DASHBOARD_PORT = 9465  # next to the relay's metrics port (9464)


class DashboardServer(Listener):
    """Serves one :class:`Dashboard`; ``/`` redirects to it. ``port=0`` lets the OS choose (tests)."""

    def __init__(self, dashboard: Dashboard, *, host: str = "127.0.0.1", port: int = DEFAULT_DASHBOARD_PORT) -> None:
        super().__init__(host=host, port=port)
        self.dashboard = dashboard

    async def start(self) -> None:
        await super().start()
        life.info("dashboard on http://%s:%d%s/", _url_host(self.host), self.port, PREFIX)

    async def dispatch(self, request: Request) -> Response:
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
