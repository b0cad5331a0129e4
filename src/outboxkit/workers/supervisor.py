"""The supervisor of ``outboxkit relay --workers N``: starts N relay processes and keeps them running.

Rules it keeps, each with a test (``tests/integration/test_workers.py``):

* **fail once at start-up**: settings, URLs, the schema, both services and the HTTP ports are
  checked here, once, before any worker starts; a bad configuration is one line and exit 2 (a
  service that does not answer: one line and exit 1), never N lines from a restart loop;
* **a worker that dies is started again** after a backoff (``core.workers.RestartPolicy``), with one
  log line saying how it ended; one that exits 2 (configuration, which a restart cannot fix) stops
  the whole group with exit 2;
* **SIGTERM/SIGINT stop the group**: each worker gets SIGTERM, finishes its batch and gives its
  leases back; the supervisor waits for all of them and exits 0 (1 if one had to be SIGKILLed
  after ``stop_timeout`` seconds, or by a second signal: the operator who will not wait);
* **a SIGKILLed supervisor leaves no worker behind**: each worker stops when its parent goes
  (``workers.child``). Workers run in their own process group, so a terminal's Ctrl-C reaches the
  supervisor only, which then stops them in order.

The supervisor holds no lease and no connection once the workers run; it only waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType

from outboxkit.core.logfmt import LIFE_LOGGER, JsonFormatter
from outboxkit.core.urls import redact_url
from outboxkit.core.workers import RestartPolicy, fatal, ports_fit, worker_owner, worker_port
from outboxkit.errors import ConfigurationError
from outboxkit.relay.loop import RelayConfig
from outboxkit.workers.spec import WorkerSpec

log = logging.getLogger("outboxkit.relay")
life = logging.getLogger(LIFE_LOGGER)

#: Seconds between looks at the workers: a dead one is noticed within this (plus its backoff).
TICK = 0.2


@dataclass
class _Slot:
    spec: WorkerSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    policy: RestartPolicy = field(default_factory=RestartPolicy)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Supervisor:
    """Runs one process per spec (``python -m outboxkit.workers.child``) until told to stop."""

    def __init__(
        self,
        specs: list[WorkerSpec],
        *,
        stop_timeout: float = 60.0,
        command: Callable[[WorkerSpec], list[str]] | None = None,
    ) -> None:
        self.slots = [_Slot(s) for s in specs]
        self.stop_timeout = stop_timeout
        self.command = command or (lambda _: [sys.executable, "-m", "outboxkit.workers.child"])
        self._stopping = False

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stopping = True
            return
        # A second signal while the workers finish their batch: the operator will not wait.
        log.warning("second %s: SIGKILL to the workers still running", signal.Signals(signum).name)
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.kill()

    def _start(self, slot: _Slot) -> None:
        proc = subprocess.Popen(
            self.command(slot.spec),
            stdin=subprocess.PIPE,
            # Their own process group: a terminal's Ctrl-C goes to the supervisor alone, which
            # stops the workers in order instead of each of them dying in the middle of start-up.
            process_group=0,
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(slot.spec.to_json().encode())
            proc.stdin.close()
        except BrokenPipeError:  # it died at once; the next tick sees it and restarts it
            pass
        slot.proc, slot.started_at, slot.restart_at = proc, time.monotonic(), None

    def run(self) -> int:
        """Start the workers and keep them running until SIGTERM/SIGINT; the exit status."""
        previous = {sig: signal.signal(sig, self._signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self.slots:
                self._start(slot)
            code = self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _watch(self) -> int:
        while not self._stopping:
            now = time.monotonic()
            for slot in self.slots:
                if slot.proc is not None and (rc := slot.proc.poll()) is not None:
                    lived = now - slot.started_at
                    slot.proc = None
                    if fatal(rc):
                        log.error(
                            "relay worker %s exited with status %d (a configuration error, see above); "
                            "stopping all workers",
                            slot.spec.name,
                            rc,
                        )
                        self._stop_all()
                        return rc
                    delay = slot.policy.delay(lived)
                    slot.restart_at = now + delay
                    slot.restarts += 1
                    log.warning(
                        "relay worker %s %s after %.1fs; restarting it in %.1fs",
                        slot.spec.name,
                        describe_exit(rc),
                        lived,
                        delay,
                    )
                if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at:
                    try:
                        self._start(slot)
                    except OSError as exc:  # no fork now (memory, process limit): try again later
                        delay = slot.policy.delay(0.0)
                        slot.restart_at = now + delay
                        log.warning(
                            "relay worker %s could not start (%s); trying again in %.1fs", slot.spec.name, exc, delay
                        )
            time.sleep(TICK)
        return self._stop_all()

    def _stop_all(self) -> int:
        """SIGTERM every worker, wait for all; SIGKILL those still there after ``stop_timeout``."""
        running = [s.proc for s in self.slots if s.proc is not None]
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        code = 0
        for slot in self.slots:
            if slot.proc is None:
                continue
            proc = slot.proc
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("relay worker %s did not stop within %.0fs: SIGKILL", slot.spec.name, self.stop_timeout)
                proc.kill()
                proc.wait()
                code = 1
            # A worker still starting up has no handler yet and ends by SIGTERM itself: a clean stop.
            if proc.returncode not in (0, -signal.SIGTERM):
                code = code or 1
            slot.proc = None
        return code


# -- from the CLI's settings to running workers ---------------------------------------------------


def _log_format() -> str:
    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers) else "plain"


def _check_ports(host: str, base: int, workers: int) -> None:
    if not ports_fit(base, workers):
        raise ConfigurationError(
            f"--http-port {base} with {workers} workers needs ports up to {base + workers - 1}: use a lower port"
        )
    for i in range(1, workers + 1):
        port = worker_port(base, i)
        if not port:
            return
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot serve worker w{i}'s metrics on {host}:{port}: {exc.strerror or exc}"
                ) from None


async def _preflight(db: str, broker: str, spec: WorkerSpec) -> None:
    """What each worker would check at start-up, checked once: both sides answer, the schema is there."""
    from outboxkit.relay.process import build_relay

    relay = build_relay(db, broker, ref=spec.ref, source=spec.source, config=spec.relay)
    store, publisher = await relay.start()
    await publisher.close()
    await store.close()


def run_workers(
    *,
    workers: int,
    db: str,
    broker: str,
    table: str,
    schema: str | None,
    source: str,
    relay: RelayConfig,
    hold_dead_keys: bool,
    http_host: str,
    http_port: int,
    summary_interval: float,
    debug: bool = False,
    stop_timeout: float = 60.0,
) -> int:
    """Check once, then supervise ``workers`` relay processes until SIGTERM/SIGINT; the exit status."""
    _check_ports(http_host, http_port, workers)
    # A named relay (--owner) names its workers after itself, so a restarted supervisor's workers
    # take their buckets back at once too.
    supervisor = relay.owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    base = WorkerSpec(
        index=1,
        workers=workers,
        supervisor_pid=os.getpid(),
        db=db,
        broker=broker,
        table=table,
        schema=schema,
        source=source,
        relay=relay,
        hold_dead_keys=hold_dead_keys,
        http_host=http_host,
        summary_interval=summary_interval,
        log_level=logging.getLogger().level,
        life_level=logging.getLogger(LIFE_LOGGER).getEffectiveLevel(),
        log_format=_log_format(),
        debug=debug,
    )
    asyncio.run(_preflight(db, broker, base))
    if db.startswith("sqlite"):
        log.warning(
            "SQLite allows one relay per database file: one of the %d workers relays, the others stand by "
            "to take over (more workers add no throughput here)",
            workers,
        )
    specs = [
        replace(
            base,
            index=i,
            relay=replace(relay, owner=worker_owner(supervisor, i)),
            http_port=worker_port(http_port, i),
        )
        for i in range(1, workers + 1)
    ]
    ports = f"; metrics on ports {http_port}-{http_port + workers - 1}" if http_port else ""
    life.info(
        "relay supervisor started %d workers %s..%s: %s -> %s%s",
        workers,
        specs[0].relay.owner,
        f"w{workers}",
        redact_url(db),
        redact_url(broker),
        ports,
    )
    group = Supervisor(specs, stop_timeout=stop_timeout)
    code = group.run()
    restarts = sum(slot.restarts for slot in group.slots)
    life.info("relay supervisor stopped: %d workers, %d restarts, exit status %d", workers, restarts, code)
    return code
