"""Observability for a running relay: Prometheus metrics, health and readiness over HTTP.

Built on the relay floor, never imported by it: the relay calls whatever observer it was given,
and :class:`RelayMetrics` is the one this package provides. See ``docs/observability.md``.
"""

from outboxkit.web.metrics import Backlog, FailureKind, Readiness, RelayMetrics, failure_kind, lag_seconds
from outboxkit.web.server import DEFAULT_HOST, DEFAULT_PORT, MetricsServer, StoreBacklogProbe, serve_relay

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Backlog",
    "FailureKind",
    "MetricsServer",
    "Readiness",
    "RelayMetrics",
    "StoreBacklogProbe",
    "failure_kind",
    "lag_seconds",
    "serve_relay",
]
