"""One worker of ``outboxkit relay --workers N``: ``python -m outboxkit.workers.child``, spec on stdin.

An ordinary relay (``web.serve_relay``, the same code as ``outboxkit relay``) under the owner name
the supervisor chose, plus two duties:

* **stop with the supervisor**: when the supervisor dies, however it dies (SIGKILL included), the
  worker gets SIGTERM and stops like any relay on SIGTERM (its batch finishes, its leases are
  given back). On Linux the kernel sends it (``PR_SET_PDEATHSIG``); elsewhere a thread watches the
  parent pid once a second;
* **say who it is**: every log line carries ``worker=wI`` (a field in JSON logs).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import threading

from rich.console import Console

from outboxkit.core.logfmt import LIFE_LOGGER, configure_logging, redact_text
from outboxkit.core.urls import remember_secrets
from outboxkit.errors import ConfigurationError
from outboxkit.terminal import print_error
from outboxkit.workers.spec import WorkerSpec

log = logging.getLogger("outboxkit.relay")
_PR_SET_PDEATHSIG = 1


def stop_with_parent(parent: int) -> None:
    """SIGTERM this process when ``parent`` is no longer its parent (it died and we were re-parented)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                # The parent may have died before the call: then no signal will come.
                if os.getppid() != parent:
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="outboxkit-parent-watch", daemon=True).start()


class _WorkerField(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.worker = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def _configure_logging(spec: WorkerSpec) -> None:
    handler = configure_logging(spec.log_level, "json" if spec.log_format == "json" else "plain", sys.stderr)
    handler.addFilter(_WorkerField(spec.name))
    logging.getLogger(LIFE_LOGGER).setLevel(spec.life_level)
    if not spec.debug:
        logging.getLogger("nats").setLevel(logging.CRITICAL)


def run(spec: WorkerSpec) -> int:
    from outboxkit.relay.process import build_relay
    from outboxkit.web import RelayMetrics, serve_relay

    remember_secrets(spec.db, spec.broker)
    metrics = RelayMetrics()
    relay = build_relay(
        spec.db,
        spec.broker,
        ref=spec.ref,
        source=spec.source,
        config=spec.relay,
        hold_dead_keys=spec.hold_dead_keys,
        observer=metrics,
    )
    stats = asyncio.run(
        serve_relay(
            relay,
            metrics,
            db=spec.db,
            broker=spec.broker,
            host=spec.http_host,
            port=spec.http_port,
            table=f"{spec.ref.qualified} as {relay.owner}",
            summary_interval=spec.summary_interval,
        )
    )
    logging.getLogger(LIFE_LOGGER).info(
        "relay stopped: %d published, %d dead-lettered, %d fenced, %d buckets taken over",
        stats.published,
        stats.dead_lettered,
        stats.fenced,
        stats.handovers,
    )
    return 0


def main() -> None:
    spec = WorkerSpec.from_json(sys.stdin.read())
    sys.stdin.close()
    stop_with_parent(spec.supervisor_pid)
    _configure_logging(spec)
    try:
        code = run(spec)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        if spec.debug:
            raise
        # One line, as the CLI would print it; the supervisor decides what the exit status means.
        print_error(Console(stderr=True, soft_wrap=True), f"worker {spec.name}: {redact_text(str(exc))}")
        code = 2 if isinstance(exc, ConfigurationError) else 1
    sys.exit(code)


if __name__ == "__main__":
    main()
