"""The relay fleet over HTTP, and the process that runs it (``outboxkit relay --fleet FILE``).

``/metrics`` (Prometheus text) carries one series per outbox with a ``tenant`` label. Its
cardinality is bounded by the fleet file: at most ``fleet.config.MAX_OUTBOXES`` tenants, each with
the fixed set of series below (no per-topic or per-key label), so a fleet of N outboxes exports
about 10 x N series. ``/healthz`` says the process answers; ``/readyz`` is 200 while every outbox
is healthy and 503 naming the unhealthy ones otherwise; ``/fleet`` is the same view as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from typing import Any

from outboxkit.fleet.runner import Fleet
from outboxkit.web.http import Listener, Request, Response
from outboxkit.web.server import is_loopback

log = logging.getLogger("outboxkit.web")
life = logging.getLogger("outboxkit.life")


def fleet_view(fleet: Fleet) -> dict[str, Any]:
    """Per outbox: health, counts, buckets, last problem (what /fleet and the summary show)."""
    now = time.monotonic()
    stale = fleet.stale_after()
    outboxes = []
    for tenant, run in sorted(fleet.runs.items()):
        s = run.state
        outboxes.append(
            {
                "tenant": tenant,
                "healthy": run.healthy(now, stale),
                "published": s.published,
                "failed_attempts": s.failed_attempts,
                "dead_lettered": s.dead_letters,
                "fenced": s.fenced_events,
                "buckets": s.buckets,
                "restarts": run.restarts,
                "last_db_ok_age_s": None if s.db_ok_at is None else round(now - s.db_ok_at, 3),
                "last_problem": s.last_problem,
            }
        )
    return {
        "owner": fleet.owner,
        "outboxes": outboxes,
        "healthy": sum(1 for o in outboxes if o["healthy"]),
        "postgresql_connections": fleet.connections(),
        "broker_clients": fleet.publishers.clients(),
        "reloads": fleet.reloads,
        "refused_reloads": fleet.refused,
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(fleet: Fleet) -> bytes:
    """Prometheus text exposition 0.0.4, one series per outbox and metric."""
    now = time.monotonic()
    stale = fleet.stale_after()
    series: list[tuple[str, str, str, list[tuple[str, float]]]] = [
        ("outboxkit_fleet_published_total", "counter", "Events published and confirmed.", []),
        ("outboxkit_fleet_publish_failures_total", "counter", "Failed publish attempts.", []),
        ("outboxkit_fleet_dead_letters_total", "counter", "Events dead-lettered (or set aside).", []),
        ("outboxkit_fleet_fenced_total", "counter", "Confirmations not marked: lease lost.", []),
        ("outboxkit_fleet_restarts_total", "counter", "Relay start-ups that failed and were retried.", []),
        ("outboxkit_fleet_leased_buckets", "gauge", "Buckets of the outbox this process holds.", []),
        ("outboxkit_fleet_outbox_healthy", "gauge", "1 while the outbox is served without trouble.", []),
        ("outboxkit_fleet_db_ok_age_seconds", "gauge", "Seconds since the last database round trip.", []),
    ]
    for tenant, run in sorted(fleet.runs.items()):
        s = run.state
        label = _escape(tenant)
        values = (
            s.published,
            s.failed_attempts,
            s.dead_letters,
            s.fenced_events,
            run.restarts,
            s.buckets,
            1 if run.healthy(now, stale) else 0,
            float("nan") if s.db_ok_at is None else now - s.db_ok_at,
        )
        for (_, _, _, rows), value in zip(series, values, strict=True):
            rows.append((label, float(value)))
    lines: list[str] = []
    for name, kind, doc, rows in series:
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f'{name}{{tenant="{label}"}} {_number(value)}' for label, value in rows)
    lines.append("# HELP outboxkit_fleet_outboxes Outboxes this process serves.")
    lines.append("# TYPE outboxkit_fleet_outboxes gauge")
    lines.append(f"outboxkit_fleet_outboxes {len(fleet.runs)}")
    lines.append("# HELP outboxkit_fleet_postgresql_connections PostgreSQL connections held (pooled and LISTEN).")
    lines.append("# TYPE outboxkit_fleet_postgresql_connections gauge")
    lines.append(f"outboxkit_fleet_postgresql_connections {fleet.connections()}")
    return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    return str(int(value)) if value == int(value) else repr(value)


class FleetServer(Listener):
    def __init__(self, fleet: Fleet, *, host: str, port: int) -> None:
        super().__init__(host=host, port=port)
        self.fleet = fleet

    async def start(self) -> None:
        if not is_loopback(self.host):
            log.warning("serving the fleet's /metrics on %s, reachable from other machines", self.host)
        await super().start()

    async def dispatch(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n")
        if request.path == "/metrics":
            return Response(200, render_metrics(self.fleet), "text/plain; version=0.0.4; charset=utf-8")
        if request.path == "/healthz":
            return Response(200, b'{"status":"alive"}\n', "application/json")
        if request.path in ("/readyz", "/fleet"):
            view = fleet_view(self.fleet)
            if request.path == "/fleet":
                return Response(200, (json.dumps(view) + "\n").encode(), "application/json")
            sick = [o["tenant"] for o in view["outboxes"] if not o["healthy"]]
            doc = {"status": "not ready" if sick else "ready", "unhealthy": sick[:50], "unhealthy_count": len(sick)}
            return Response(503 if sick else 200, (json.dumps(doc) + "\n").encode(), "application/json")
        return Response(404, b"not found: try /metrics, /healthz, /readyz or /fleet\n")


def summary_line(fleet: Fleet) -> str:
    view = fleet_view(fleet)
    sick = [o["tenant"] for o in view["outboxes"] if not o["healthy"]]
    published = sum(o["published"] for o in view["outboxes"])
    line = (
        f"fleet: {len(view['outboxes'])} outboxes, {view['healthy']} healthy; {published:,} published; "
        f"{view['postgresql_connections']} PostgreSQL connections, {view['broker_clients']} broker clients"
    )
    if sick:
        line += f"; unhealthy: {', '.join(sick[:10])}" + (f" and {len(sick) - 10} more" if len(sick) > 10 else "")
    return line


async def serve_fleet(fleet: Fleet, *, host: str = "127.0.0.1", port: int = 0, summary_interval: float = 60.0) -> None:
    """Run ``fleet`` until SIGTERM/SIGINT, with the HTTP endpoints when ``port`` is set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = FleetServer(fleet, host=host, port=port) if port else None
    reporter: asyncio.Task[None] | None = None

    async def report() -> None:
        while True:
            await asyncio.sleep(summary_interval)
            life.info("%s", summary_line(fleet))

    try:
        if server is not None:
            await server.start()
        if summary_interval:
            reporter = asyncio.create_task(report())
        life.info("fleet %s started: %d outboxes from %s", fleet.owner, len(fleet.spec.outboxes), fleet.path)
        await fleet.run(stop)
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        if server is not None:
            await server.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


__all__ = ["FleetServer", "fleet_view", "render_metrics", "serve_fleet", "summary_line"]
