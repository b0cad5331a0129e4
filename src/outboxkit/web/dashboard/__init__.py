"""A web dashboard for an outbox: backlog, lag and throughput, relays and their buckets, and dead
letters with retry / discard / replay. Server-rendered (Jinja2, the ``dashboard`` extra), inline
SVG charts, a few lines of optional JavaScript, no build step. See ``docs/dashboard.md``.

Run alone (``outboxkit dashboard``, :class:`DashboardServer`) or on a relay's HTTP port
(``outboxkit relay --http-port 9464 --dashboard``). Reads and actions go through ``outboxkit.ops``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outboxkit.web.dashboard.app import PREFIX, Dashboard
    from outboxkit.web.dashboard.security import check_bind
    from outboxkit.web.dashboard.serve import DEFAULT_DASHBOARD_PORT, DashboardServer, run_dashboard

__all__ = ["DEFAULT_DASHBOARD_PORT", "PREFIX", "Dashboard", "DashboardServer", "check_bind", "run_dashboard"]

_HOMES = {
    "PREFIX": "app",
    "Dashboard": "app",
    "check_bind": "security",
    "DEFAULT_DASHBOARD_PORT": "serve",
    "DashboardServer": "serve",
    "run_dashboard": "serve",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: `outboxkit --help` must work without the dashboard extra (Jinja2).
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
